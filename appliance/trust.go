package appliance

import (
	"fmt"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/embed"
	"github.com/edgegate/edgegate/parser"
)

// checkTrust refuses NATS listeners that the network reaches without
// authentication (docs/design.md, "Trust and overlapping faults": a client
// port, and routes, which carry coordination). Loopback listeners serve
// the host only.
func (n NATSConfig) checkTrust() error {
	if n.Listen != "" && !embed.LoopbackAddr(n.Listen) && n.User == "" && len(n.NKeys) == 0 && n.TLSClientCA == "" {
		return fmt.Errorf("config: nats.listen: %q: a client port reachable from the network needs client authentication: "+
			"set nats.user and nats.password, nats.nkeys, or nats.tls_cert, nats.tls_key and nats.tls_client_ca (or listen on 127.0.0.1)", n.Listen)
	}
	c := n.Cluster
	if c.TLSCert != "" && c.TLSCA == "" {
		return fmt.Errorf(`config: nats.cluster.tls_ca: "": route TLS needs the CA bundle route certificates are signed by: it never trusts the system roots`)
	}
	if c.User != "" || c.TLSCA != "" {
		return nil
	}
	how := "set nats.cluster.user and nats.cluster.password (the same on every appliance), or nats.cluster.tls_cert, nats.cluster.tls_key and nats.cluster.tls_ca"
	if len(c.Peers) > 0 {
		return fmt.Errorf("config: nats.cluster.peers: %q: routes carry coordination and must be authenticated: %s", c.Peers, how)
	}
	if c.Listen != "" && !embed.LoopbackAddr(c.Listen) {
		return fmt.Errorf("config: nats.cluster.listen: %q: a route listener reachable from the network must authenticate routes: %s", c.Listen, how)
	}
	return nil
}

// clientRights is what a client login of the NATS port may do: read the
// two streams and their subjects, and ask for `edgegate status`.
func clientRights() embed.ClientRights {
	return embed.ClientRights{
		Streams:  []string{parser.StreamParsed, parser.StreamDead},
		Subjects: []string{coord.ParsedSubject(">"), coord.DeadSubject(">")},
		Services: []string{coord.SubjectStatus},
	}
}
