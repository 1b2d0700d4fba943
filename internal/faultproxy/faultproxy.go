// Package faultproxy is a TCP relay for fault injection in tests: it can
// reset every relayed connection, make its target unreachable for a while,
// freeze (relay nothing, close nothing: a half-open link), or lose the
// next reply.
package faultproxy

import (
	"io"
	"net"
	"sync"
)

// Proxy relays connections from its listener to a target.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	conns   []net.Conn
	frozen  bool
	blocked bool
	dropUp  bool // the next bytes from the target are dropped, the link reset
	held    []net.Conn
	wg      sync.WaitGroup
}

// New listens on a free loopback port and relays to target.
func New(target string) (*Proxy, error) {
	return Listen("127.0.0.1:0", target)
}

// Listen relays connections to addr on to target.
func Listen(addr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the address to dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.blocked {
			p.held = append(p.held, down)
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(down, up, true)
		go p.pipe(up, down, false)
	}
}

func (p *Proxy) isFrozen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen
}

// dropping reports whether bytes from the target are to be dropped now,
// and stops it.
func (p *Proxy) dropping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.dropUp
	p.dropUp = false
	return d
}

func (p *Proxy) pipe(dst, src net.Conn, fromTarget bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && fromTarget && p.dropping() {
			dst.Close()
			src.Close()
			return
		}
		if n > 0 && !p.isFrozen() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			switch {
			case p.isFrozen(): // the other side never learns
			case err == io.EOF: // a FIN: pass it on
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			default: // a reset (a killed process): reset the other side too
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.SetLinger(0)
				}
				dst.Close()
			}
			return
		}
	}
}

// Cut closes every relayed connection: a reset from both sides' view.
func (p *Proxy) Cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Block makes the target unreachable: relayed connections are cut and new
// ones are held open without an answer until Unblock.
func (p *Proxy) Block() {
	p.mu.Lock()
	p.blocked = true
	p.mu.Unlock()
	p.Cut()
}

// Unblock lets connections through again; the held ones are closed.
func (p *Proxy) Unblock() {
	p.mu.Lock()
	p.blocked = false
	held := p.held
	p.held = nil
	p.mu.Unlock()
	for _, c := range held {
		c.Close()
	}
}

// LoseNextReply drops the next bytes the target sends on any connection
// and closes that connection: a request that was carried out, and whose
// answer never came back.
func (p *Proxy) LoseNextReply() {
	p.mu.Lock()
	p.dropUp = true
	p.mu.Unlock()
}

// Freeze stops relaying bytes but keeps every connection open.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

// Close stops the proxy and closes everything.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Unblock()
	p.Cut()
	p.wg.Wait()
}
