package admission

import (
	"container/list"
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// ConnLimiter caps the connections a listener serves at once (the gRPC
// listener's and the metrics listener's each have one): in all, and
// from one source (an IPv4 address, or an IPv6 /64, as the limits count
// anonymous callers). Without it a client could open connections until
// probed ran out of file descriptors, and then its probes failed with
// EMFILE.
//
// A connection that has nothing to lose is evictable: one that has not
// authenticated (gRPC), or that waits idle between requests (HTTP keep
// alive); its server says so (SetEvictable). When a cap is full, a new
// connection takes the place of the evictable one that became so
// longest ago (of its own source, for the per-source cap), which is
// closed; only when none is evictable is the new one closed instead, as
// soon as it is accepted, before any byte of it is read. So connections
// that only hold a place cannot lock out callers who would use it: an
// attacker filling the caps churns its own connections.
type ConnLimiter struct {
	max, perSource int
	// refused is told of each connection closed, by reason:
	// "connections" or "connections_per_source" for a new one refused,
	// "evicted" for an evictable one closed to make room.
	refused func(reason string)
	// open counts the connections served.
	open prometheus.Gauge

	mu       sync.Mutex
	total    int
	bySource map[netip.Prefix]int
	// evictable are the evictable connections, the longest so first.
	evictable list.List
}

// NewConnLimiter caps connections at max in all and perSource from one
// source; open counts those served, refused is told of each closed, by
// reason.
func NewConnLimiter(max, perSource int, open prometheus.Gauge, refused func(string)) *ConnLimiter {
	return &ConnLimiter{max: max, perSource: perSource, open: open, refused: refused, bySource: map[netip.Prefix]int{}}
}

// Listener returns lis with its connections held to the caps. Its
// connections start evictable.
func (l *ConnLimiter) Listener(lis net.Listener) net.Listener {
	return &limitedListener{Listener: lis, l: l}
}

// take counts a new connection from source, making room by evicting one
// when a cap is full, or reports why it may not be served.
func (l *ConnLimiter) take(c *limitedConn) (reason string, ok bool) {
	l.mu.Lock()
	var victim *limitedConn
	switch {
	case l.bySource[c.source] >= l.perSource:
		victim, reason = l.oldestLocked(c.source), "connections_per_source"
	case l.total >= l.max:
		victim, reason = l.oldestLocked(netip.Prefix{}), "connections"
	}
	if reason != "" && victim == nil {
		l.mu.Unlock()
		return reason, false
	}
	if victim != nil {
		// Its place is the new one's: it no longer counts.
		l.forgetLocked(victim)
	}
	l.total++
	l.bySource[c.source]++
	l.open.Inc()
	c.elem = l.evictable.PushBack(c)
	l.mu.Unlock()
	if victim != nil {
		l.refused("evicted")
		victim.reset()
	}
	return "", true
}

// oldestLocked is the connection evictable longest, of source when it is
// valid; nil when there is none.
func (l *ConnLimiter) oldestLocked(source netip.Prefix) *limitedConn {
	for e := l.evictable.Front(); e != nil; e = e.Next() {
		if c := e.Value.(*limitedConn); !source.IsValid() || c.source == source {
			return c
		}
	}
	return nil
}

// forgetLocked stops counting c: it was closed, or evicted.
func (l *ConnLimiter) forgetLocked(c *limitedConn) {
	if c.released {
		return
	}
	c.released = true
	if c.elem != nil {
		l.evictable.Remove(c.elem)
		c.elem = nil
	}
	l.total--
	l.open.Dec()
	if l.bySource[c.source]--; l.bySource[c.source] == 0 {
		delete(l.bySource, c.source)
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
		lc := &limitedConn{Conn: c, l: ll.l, source: sourceOf(c.RemoteAddr())}
		reason, ok := ll.l.take(lc)
		if ok {
			return lc, nil
		}
		ll.l.refused(reason)
		// It never counted: closing it gives no place back.
		lc.released = true
		lc.reset()
	}
}

// limitedConn is a connection counted by a ConnLimiter; it gives its
// place back when it is closed, once.
type limitedConn struct {
	net.Conn
	l      *ConnLimiter
	source netip.Prefix
	// Guarded by l.mu: elem is c's place among the evictable, nil when
	// it is not; released, once it no longer counts.
	elem     *list.Element
	released bool
}

// SetEvictable says whether the connection may be closed to make room for
// a new one (see ConnLimiter).
func (c *limitedConn) SetEvictable(evictable bool) {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	switch {
	case c.released:
	case evictable && c.elem == nil:
		c.elem = c.l.evictable.PushBack(c)
	case !evictable && c.elem != nil:
		c.l.evictable.Remove(c.elem)
		c.elem = nil
	}
}

// Evictable is what a ConnLimiter's connections are: its server marks
// them (gRPC once one authenticates, HTTP as it goes idle or busy).
type Evictable interface {
	SetEvictable(bool)
}

// SetEvictable marks c when it is a ConnLimiter's connection, or wraps
// one (as a TLS connection does); other connections are left alone.
func SetEvictable(c net.Conn, evictable bool) {
	for c != nil {
		if e, ok := c.(Evictable); ok {
			e.SetEvictable(evictable)
			return
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return
		}
		c = u.NetConn()
	}
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.l.mu.Lock()
	c.l.forgetLocked(c)
	c.l.mu.Unlock()
	return err
}

// reset closes the connection with a reset rather than a FIN: the client
// learns at once, and probed keeps no socket in TIME_WAIT for it. Whatever
// serves it then fails its next read or write.
func (c *limitedConn) reset() {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
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
