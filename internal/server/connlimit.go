package server

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc/peer"
)

// connLimiter caps the metrics listener's open connections: in all, and
// from one source (an IPv4 address or IPv6 /64, as the limits count an
// anonymous caller). A connection over either cap is closed as it is
// accepted, before a byte of it is read or a TLS handshake begins: it
// holds nothing, and those under the caps keep their file descriptors.
type connLimiter struct {
	net.Listener
	// ctx is the server's, for naming a connection's source.
	ctx            context.Context
	max, perSource int
	metrics        *metrics

	mu       sync.Mutex
	total    int
	bySource map[caller]int
}

func newConnLimiter(ctx context.Context, lis net.Listener, max, perSource int, m *metrics) *connLimiter {
	return &connLimiter{Listener: lis, ctx: ctx, max: max, perSource: perSource, metrics: m, bySource: map[caller]int{}}
}

// Accept returns the next connection under the caps, closing those over
// them.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if release, ok := l.take(c.RemoteAddr()); ok {
			return &limitedConn{Conn: c, release: release}, nil
		}
		c.Close()
	}
}

// take counts a connection from addr, or reports that it is over a cap.
func (l *connLimiter) take(addr net.Addr) (release func(), ok bool) {
	key := callerOf(peer.NewContext(l.ctx, &peer.Peer{Addr: addr}))
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.max:
		l.metrics.limitRefusals.WithLabelValues("metrics_connections").Inc()
		return nil, false
	case l.bySource[key] >= l.perSource:
		l.metrics.limitRefusals.WithLabelValues("metrics_connections_per_source").Inc()
		return nil, false
	}
	l.total++
	l.bySource[key]++
	l.metrics.metricsConnections.Inc()
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.total--
		if l.bySource[key]--; l.bySource[key] == 0 {
			delete(l.bySource, key)
		}
		l.metrics.metricsConnections.Dec()
	}, true
}

// limitedConn gives its place back when it is closed, once.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
