package main

import (
	"fmt"
	"net/url"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"
)

// natsFlags are the connection flags of the commands that talk to an
// appliance's NATS client port.
func natsFlags(usage string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "nats", Usage: usage + " (nats://user:password@host:4222 with nats.user; tls:// with nats.tls_cert)", Value: "nats://127.0.0.1:4222", EnvVars: []string{"EDGEGATE_NATS_URL"}},
		&cli.StringFlag{Name: "nkey", Usage: "file with the nkey seed (SU...) of a user in nats.nkeys", EnvVars: []string{"EDGEGATE_NATS_NKEY"}, TakesFile: true},
		&cli.StringFlag{Name: "tls-ca", Usage: "PEM CA bundle that the appliance's certificate is signed by", EnvVars: []string{"EDGEGATE_NATS_TLS_CA"}, TakesFile: true},
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM client certificate (nats.tls_client_ca)", EnvVars: []string{"EDGEGATE_NATS_TLS_CERT"}, TakesFile: true},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM key of --tls-cert", EnvVars: []string{"EDGEGATE_NATS_TLS_KEY"}, TakesFile: true},
	}
}

// connectNATS connects as the flags of natsFlags say.
func connectNATS(c *cli.Context, name string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append(opts, nats.Name(name))
	if f := c.String("nkey"); f != "" {
		o, err := nats.NkeyOptionFromSeed(f)
		if err != nil {
			return nil, fmt.Errorf("--nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if f := c.String("tls-ca"); f != "" {
		opts = append(opts, nats.RootCAs(f))
	}
	if cert, key := c.String("tls-cert"), c.String("tls-key"); cert != "" || key != "" {
		opts = append(opts, nats.ClientCert(cert, key))
	}
	nc, err := nats.Connect(c.String("nats"), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", redactNATS(c.String("nats")), err)
	}
	return nc, nil
}

// redactNATS hides the password of a NATS URL.
func redactNATS(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
