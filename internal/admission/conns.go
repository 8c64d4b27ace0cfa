package admission

import (
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// ConnLimiter caps the connections a listener serves at once (the gRPC
// listener's and the metrics listener's each have one): in all, and
// from one source (an IPv4 address, or an IPv6 /64, as the limits count
// anonymous callers). A connection over either cap is closed as soon as
// it is accepted, before any byte of it is read, and counted by reason.
// Without it a client could open connections until probed ran out of file
// descriptors, and then its probes failed with EMFILE.
type ConnLimiter struct {
	max, perSource int
	// refused is told of each connection closed, by reason
	// ("connections" or "connections_per_source").
	refused func(reason string)
	// open counts the connections served.
	open prometheus.Gauge

	mu       sync.Mutex
	total    int
	bySource map[netip.Prefix]int
}

// NewConnLimiter caps connections at max in all and perSource from one
// source; open counts those served, refused is told of each closed, by
// reason.
func NewConnLimiter(max, perSource int, open prometheus.Gauge, refused func(string)) *ConnLimiter {
	return &ConnLimiter{max: max, perSource: perSource, open: open, refused: refused, bySource: map[netip.Prefix]int{}}
}

// Listener returns lis with its connections held to the caps.
func (l *ConnLimiter) Listener(lis net.Listener) net.Listener {
	return &limitedListener{Listener: lis, l: l}
}

// take counts a connection from source, or reports why it may not be
// served.
func (l *ConnLimiter) take(source netip.Prefix) (reason string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.max:
		return "connections", false
	case l.bySource[source] >= l.perSource:
		return "connections_per_source", false
	}
	l.total++
	l.bySource[source]++
	l.open.Inc()
	return "", true
}

func (l *ConnLimiter) release(source netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	l.open.Dec()
	if l.bySource[source]--; l.bySource[source] == 0 {
		delete(l.bySource, source)
	}
}

type limitedListener struct {
	net.Listener
	l *ConnLimiter
}

func (ll *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		source := sourceOf(c.RemoteAddr())
		reason, ok := ll.l.take(source)
		if ok {
			return &limitedConn{Conn: c, l: ll.l, source: source}, nil
		}
		ll.l.refused(reason)
		// A reset rather than a FIN: the client learns at once, and
		// probed keeps no socket in TIME_WAIT for it.
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// limitedConn gives its place back when it is closed, once.
type limitedConn struct {
	net.Conn
	l      *ConnLimiter
	source netip.Prefix
	once   sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.source) })
	return err
}

// CloseWrite half-closes a TCP connection, for the lingering close of
// guardedConn.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// sourceOf is whom a connection from addr counts against: its IPv4
// address, or its IPv6 /64 (a host commonly has a whole /64 to pick
// addresses from); every Unix socket client is one source.
func sourceOf(addr net.Addr) netip.Prefix {
	a, ok := addr.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip := a.AddrPort().Addr().Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}
