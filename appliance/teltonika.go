package appliance

import (
	"crypto/tls"
	"errors"
	"fmt"
)

// checkTeltonika checks the Teltonika listener's settings (Validate).
func (d DevicesConfig) checkTeltonika() error {
	if d.TeltonikaListen == "" {
		return nil
	}
	if d.TeltonikaIMEIs == "" && d.Auth != "open" {
		// A Teltonika device has no token nor (as a rule) a certificate
		// of its own: its IMEI on this list is all that admits it.
		// Refusing every device would look like a network fault from the
		// device's side; better to say so at the start.
		return errors.New("config: devices.teltonika_imeis: the Teltonika listener takes only the IMEIs of this file (one a line; a line * takes any), or any IMEI with devices.auth: open: set one")
	}
	if d.Ack == "none" {
		return fmt.Errorf("config: devices.ack: %q: the Teltonika listener needs ACKs (a device sends an unacknowledged packet again, and nothing after it)", d.Ack)
	}
	if d.TeltonikaTLS && d.TLSCert == "" {
		return errors.New("config: devices.teltonika_tls: needs devices.tls_cert and devices.tls_key")
	}
	return nil
}

// teltonikaTLS is the Teltonika listener's TLS configuration: the
// devices' one when devices.teltonika_tls is set, else none.
func teltonikaTLS(d DevicesConfig, devices *tls.Config) *tls.Config {
	if !d.TeltonikaTLS {
		return nil
	}
	return devices
}

// TeltonikaAddr returns the Teltonika listener's address, "" when
// disabled.
func (a *Appliance) TeltonikaAddr() string {
	if a.sock == nil || a.sock.TeltonikaAddr() == nil {
		return ""
	}
	return a.sock.TeltonikaAddr().String()
}
