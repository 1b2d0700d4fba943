package appliance

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// certPool reads a PEM CA bundle; key names the setting in errors.
func certPool(key, file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("appliance: %s: %w", key, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("appliance: %s %s: no PEM certificate in it", key, file)
	}
	return pool, nil
}

// serverTLS builds the TLS configuration of a listener from the settings
// <section>.tls_cert, tls_key and the CA bundle setting caKey: nil for plain
// TCP; with a CA bundle, peers must present a certificate signed by it.
func serverTLS(section, cert, key, caKey, ca string) (*tls.Config, error) {
	if cert == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("appliance: %s.tls_cert/%s.tls_key: %w", section, section, err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if ca != "" {
		pool, err := certPool(section+"."+caKey, ca)
		if err != nil {
			return nil, err
		}
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// redisTLS completes the TLS configuration go-redis made from a rediss://
// URL with the CA bundle and client certificate of the lease settings.
func redisTLS(t *tls.Config, l LeaseConfig) error {
	if l.RedisTLSCA == "" && l.RedisTLSCert == "" {
		return nil
	}
	if t == nil {
		return fmt.Errorf("appliance: lease.redis_tls_*: the lease.redis URL must be rediss:// (TLS)")
	}
	if l.RedisTLSCA != "" {
		pool, err := certPool("lease.redis_tls_ca", l.RedisTLSCA)
		if err != nil {
			return err
		}
		t.RootCAs = pool
	}
	if l.RedisTLSCert != "" {
		pair, err := tls.LoadX509KeyPair(l.RedisTLSCert, l.RedisTLSKey)
		if err != nil {
			return fmt.Errorf("appliance: lease.redis_tls_cert/lease.redis_tls_key: %w", err)
		}
		t.Certificates = []tls.Certificate{pair}
	}
	return nil
}
