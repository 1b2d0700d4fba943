package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"
)

// natsFlags are the connection flags of the commands that talk to an
// appliance's NATS client port.
func natsFlags(usage string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "nats", Usage: usage + " (nats://user@host:4222 with nats.user, the password in --password-file; tls:// with nats.tls_cert)", Value: "nats://127.0.0.1:4222", EnvVars: []string{"EDGEGATE_NATS_URL"}},
		&cli.StringFlag{Name: "password-file", Usage: "file holding the password of the user in --nats (a password in the URL shows in the process list)", EnvVars: []string{"EDGEGATE_NATS_PASSWORD_FILE"}, TakesFile: true},
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
	server := c.String("nats")
	if f := c.String("password-file"); f != "" {
		u, err := url.Parse(server)
		if err != nil || u.User == nil || u.User.Username() == "" {
			return nil, errors.New("--password-file: --nats names no user (nats://user@host:4222)")
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--password-file: %w", err)
		}
		opts = append(opts, nats.UserInfo(u.User.Username(), strings.TrimSpace(string(b))))
		// A user in the URL would be taken for a token.
		u.User = nil
		server = u.String()
	}
	if f := c.String("tls-ca"); f != "" {
		opts = append(opts, nats.RootCAs(f))
	}
	if cert, key := c.String("tls-cert"), c.String("tls-key"); cert != "" || key != "" {
		opts = append(opts, nats.ClientCert(cert, key))
	}
	nc, err := nats.Connect(server, opts...)
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
