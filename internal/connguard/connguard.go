// Package connguard watches the HTTP/2 connections of a gRPC server from
// below gRPC, as transport credentials: it follows the frames both ways,
// reading only their headers, and closes with a GOAWAY a connection that
// throws streams away (the HTTP/2 rapid reset attack), or that stays
// unauthenticated too long or sends too much before it authenticates. gRPC
// counts none of this, and sees nothing of a connection it closes.
package connguard

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// HTTP/2 framing, as far as the connection guard needs it (RFC 9113).
const (
	frameHeaderLen = 9
	frameHeaders   = 0x1
	frameRSTStream = 0x3
	frameGoAway    = 0x7
	// errEnhanceYourCalm is the GOAWAY code for a peer that generates
	// excessive load.
	errEnhanceYourCalm = 0xb
)

// An unauthenticated connection's bytes, frames of every kind: a burst of
// unknownDataBurst, unknownDataRefill more a second. Health checks, the
// only calls such a connection may make when tokens are required, take a
// few dozen bytes each.
const (
	unknownDataBurst  = 16 << 10
	unknownDataRefill = 1 << 10
)

// clientPreface opens every HTTP/2 connection, before the client's first
// frame.
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Why a connection was cut, in its GOAWAY's debug data.
var (
	// errTooManyResets ends a connection that cancelled or had refused
	// too many streams.
	errTooManyResets = errors.New("too many streams reset or refused")
	// errUnauthenticatedIdle ends a connection that made no authenticated
	// call within the auth timeout.
	errUnauthenticatedIdle = errors.New("no authenticated call in time")
	// errUnauthenticatedData ends an unauthenticated connection that
	// sent more data than health checks take.
	errUnauthenticatedData = errors.New("too much data before authenticating")
)

// guardedCreds wraps the server's transport credentials so that every
// connection is a guardedConn, whatever the security: it watches the
// client's frames for streams opened and thrown away (rapid reset, CVE-2023-
// 44487), which gRPC counts nowhere, and closes such a connection with a
// GOAWAY.
//
// It also keeps an unauthenticated connection small and short: until a
// call on it has been authenticated (see markKnown), it may send only a
// little data (unknownDataBurst), and it is closed once authTimeout has
// passed since its last stream opened, unless a stream of it is still
// running (a health Watch).
type guardedCreds struct {
	credentials.TransportCredentials
	Options
}

// Options are a guard's limits.
type Options struct {
	// Burst is how many streams a connection may have reset or refused
	// in a row; Refill is how many it earns back a second.
	Burst, Refill float64
	// AuthTimeout is how long a connection may stay unauthenticated and
	// idle.
	AuthTimeout time.Duration
	// Cut, when set, is told of each connection closed, by reason:
	// stream_resets, unauthenticated_idle or unauthenticated_data.
	Cut func(reason string)
	// EvictIdle keeps a connection evictable (see
	// admission.ConnLimiter) whenever no call runs on it, known or not:
	// for a server that authenticates no one, where any call makes a
	// connection known, so that being known cannot hold a place. Else a
	// known connection is never evicted.
	EvictIdle bool
}

// Creds returns creds with every connection guarded.
func Creds(creds credentials.TransportCredentials, opts Options) credentials.TransportCredentials {
	return &guardedCreds{TransportCredentials: creds, Options: opts}
}

func (g *guardedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := g.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	gc := &guardedConn{Conn: conn, raw: raw, creds: g, tokens: g.Burst, last: now, rframes: frameScanner{skip: len(clientPreface)},
		dataTokens: unknownDataBurst, dataLast: now}
	gc.lastStream.Store(now.UnixNano())
	if ti, ok := info.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
		// A verified client certificate has named the caller already.
		gc.markKnown()
	} else {
		gc.authTimer = time.AfterFunc(g.AuthTimeout, gc.checkAuth)
	}
	return gc, &connInfo{AuthInfo: info, conn: gc}, nil
}

func (g *guardedCreds) Clone() credentials.TransportCredentials {
	c := *g
	c.TransportCredentials = g.TransportCredentials.Clone()
	return &c
}

// connInfo is a connection's AuthInfo, from which the tap handle reaches
// its guardedConn.
type connInfo struct {
	credentials.AuthInfo
	conn *guardedConn
}

// AuthInfo returns the AuthInfo the credentials made, under the guard's.
func AuthInfo(info credentials.AuthInfo) credentials.AuthInfo {
	if ci, ok := info.(*connInfo); ok {
		return ci.AuthInfo
	}
	return info
}

// guardedConn is a server connection that follows the HTTP/2 frames both
// ways, reading only their headers. It keeps a token bucket of streams the
// client may throw away: each RST_STREAM the client sends, and each stream
// the server refuses before running it, takes a token; tokens come back at
// refill a second. A client that runs out gets a GOAWAY
// (ENHANCE_YOUR_CALM), written between two of the server's frames, and the
// connection is closed. So does an unauthenticated connection that sends
// more data than its budget, or stays idle past the auth timeout.
type guardedConn struct {
	net.Conn
	// raw is the connection as the listener gave it, under TLS if any.
	raw   net.Conn
	creds *guardedCreds

	// Read side: only the goroutine reading the connection (gRPC's
	// reader, which also runs the tap handle) touches these.
	rframes frameScanner
	// readID is the last stream opened in what was read so far.
	readID uint32
	// While the connection is not known: the data it sent since the last
	// read, and its bucket of data.
	unknownData int
	dataTokens  float64
	dataLast    time.Time

	// known is set once a call on the connection has been authenticated.
	known atomic.Bool
	// lastStream is when the last stream opened (Unix nanoseconds), and
	// open counts the calls running (see Hold), for the auth timeout and
	// EvictIdle; hmu orders open's changes with the evictability they
	// set.
	lastStream atomic.Int64
	open       atomic.Int32
	hmu        sync.Mutex
	authTimer  *time.Timer

	// The bucket of streams the client may discard, charged by the
	// reader and by handlers.
	bmu    sync.Mutex
	tokens float64
	last   time.Time
	// cutErr, once set, is why the connection is being closed: its
	// reader reads no more.
	cutErr atomic.Pointer[error]

	// lastID is the last stream opened in what was handed to gRPC: the
	// GOAWAY's last stream.
	lastID atomic.Uint32

	// Write side: wmu is held by the writer (gRPC's) for each write, and
	// by the reader when it writes the GOAWAY itself.
	wmu     sync.Mutex
	wframes frameScanner
	// goaway is set once the connection is to be closed: the GOAWAY goes
	// out at the next frame boundary.
	goaway atomic.Bool
	sent   bool
	linger sync.Once
}

func (c *guardedConn) Read(p []byte) (int, error) {
	if err := c.cutErr.Load(); err != nil {
		c.closeWithGoAway()
		return 0, *err
	}
	// gRPC has dealt with the frames of the last read, so a stream that
	// authenticated in them has marked the connection known by now.
	if c.unknownData > 0 {
		c.chargeUnknownData()
	}
	n, err := c.Conn.Read(p)
	if !c.known.Load() {
		// Every byte counts, headers and control frames too: a health
		// check's few dozen bytes each fit the budget many times over.
		c.unknownData += n
	}
	c.scanRead(p[:n])
	if cut := c.cutErr.Load(); cut != nil {
		// What was read with the frame that broke the budget is dropped:
		// gRPC never sees the streams it opens.
		c.closeWithGoAway()
		return 0, *cut
	}
	c.lastID.Store(c.readID)
	return n, err
}

// chargeUnknownData takes the data read since the last read from an
// unknown connection's bucket, and cuts the connection when it runs out.
func (c *guardedConn) chargeUnknownData() {
	n := c.unknownData
	c.unknownData = 0
	if c.known.Load() {
		return
	}
	now := time.Now()
	c.dataTokens = min(unknownDataBurst, c.dataTokens+now.Sub(c.dataLast).Seconds()*unknownDataRefill) - float64(n)
	c.dataLast = now
	if c.dataTokens < 0 {
		c.cut("unauthenticated_data", errUnauthenticatedData)
	}
}

// scanRead follows the client's frames through b.
func (c *guardedConn) scanRead(b []byte) {
	c.rframes.scan(b, func(typ byte, length int, id uint32) {
		switch typ {
		case frameHeaders:
			c.readID = max(c.readID, id)
		case frameRSTStream:
			c.discarded()
		}
	})
}

// frameScanner follows HTTP/2 frames through the bytes of one direction of
// a connection, as they pass in pieces of any size, reading only the
// frame headers. (x/net/http2's Framer reads whole frames from a reader;
// the guard must pass the bytes on unchanged, as they come, without
// holding any of them.)
type frameScanner struct {
	hdr    [frameHeaderLen]byte
	hdrLen int
	// skip is what is left of the current frame's payload (or of the
	// client preface).
	skip int
}

// scan follows the frames through b, calling frame for each frame header
// completed in it.
func (f *frameScanner) scan(b []byte, frame func(typ byte, length int, id uint32)) {
	for len(b) > 0 {
		if f.skip > 0 {
			n := min(f.skip, len(b))
			f.skip -= n
			b = b[n:]
			continue
		}
		n := copy(f.hdr[f.hdrLen:], b)
		f.hdrLen += n
		b = b[n:]
		if f.hdrLen < frameHeaderLen {
			return
		}
		f.hdrLen = 0
		f.skip = int(f.hdr[0])<<16 | int(f.hdr[1])<<8 | int(f.hdr[2])
		if frame != nil {
			frame(f.hdr[3], f.skip, binary.BigEndian.Uint32(f.hdr[5:9])&0x7fffffff)
		}
	}
}

// atBoundary reports whether the bytes so far end on a frame boundary.
func (f *frameScanner) atBoundary() bool { return f.hdrLen == 0 && f.skip == 0 }

// discarded takes a token for a stream the client reset or the server
// refused. Past the last token the connection is cut.
func (c *guardedConn) discarded() {
	c.bmu.Lock()
	now := time.Now()
	c.tokens = min(c.creds.Burst, c.tokens+now.Sub(c.last).Seconds()*c.creds.Refill)
	c.last = now
	c.tokens--
	over := c.tokens < 0
	c.bmu.Unlock()
	if over {
		c.cut("stream_resets", errTooManyResets)
	}
}

// cut closes the connection with a GOAWAY (ENHANCE_YOUR_CALM) saying why:
// now, or at the end of the write in progress; and its reader reads no
// more. Waiting for the next read would wait for ever on a client that
// has sent all it means to and waits for answers.
func (c *guardedConn) cut(reason string, why error) {
	if !c.cutErr.CompareAndSwap(nil, &why) {
		return
	}
	if c.creds.Cut != nil {
		c.creds.Cut(reason)
	}
	c.closeWithGoAway()
}

// markKnown records that a call on the connection was authenticated: from
// now on its data is charged to callers by the limits, not to the
// connection, and it may stay open idle.
func (c *guardedConn) markKnown() {
	if c.known.Swap(true) {
		return
	}
	if c.authTimer != nil {
		c.authTimer.Stop()
	}
	// A listener that makes room by closing connections that have
	// nothing to lose (admission.ConnLimiter) keeps this one now, unless
	// knowing it proves nothing.
	if !c.creds.EvictIdle {
		c.setEvictable(false)
	}
}

// setEvictable tells the listener's connection whether it may be closed
// to make room for a new one, when its listener makes room so.
func (c *guardedConn) setEvictable(evictable bool) {
	if e, ok := c.raw.(interface{ SetEvictable(bool) }); ok {
		e.SetEvictable(evictable)
	}
}

// checkAuth runs when the auth timeout may have passed: an unknown
// connection with no stream running and none opened within the timeout is
// cut.
func (c *guardedConn) checkAuth() {
	if c.known.Load() || c.cutErr.Load() != nil {
		return
	}
	idle := time.Since(time.Unix(0, c.lastStream.Load()))
	switch {
	case c.open.Load() > 0:
		c.authTimer.Reset(c.creds.AuthTimeout)
	case idle < c.creds.AuthTimeout:
		c.authTimer.Reset(c.creds.AuthTimeout - idle)
	default:
		c.cut("unauthenticated_idle", errUnauthenticatedIdle)
	}
}

// Refused charges the connection of the call ctx belongs to for a stream
// the server refused: a client opening stream after stream only to have
// them refused is on its way to a GOAWAY.
func Refused(ctx context.Context) {
	p, _ := peer.FromContext(ctx)
	RefusedPeer(p)
}

// RefusedPeer is Refused, for a call refused before it had a context of
// its own (gRPC's tap handle).
func RefusedPeer(p *peer.Peer) {
	if c := connOf(p); c != nil {
		c.discarded()
	}
}

// StreamOpened records that a stream of p's connection opened (and keeps
// it from the auth timeout a while); authenticated records that its call
// was authenticated, which makes the connection known: from then on its
// data is charged to callers by the limits, not to the connection, and it
// may stay open idle.
func StreamOpened(p *peer.Peer, authenticated bool) {
	c := connOf(p)
	if c == nil {
		return
	}
	c.lastStream.Store(time.Now().UnixNano())
	if authenticated {
		c.markKnown()
	}
}

// connOf returns the guardedConn a call came on, or nil.
func connOf(p *peer.Peer) *guardedConn {
	if p == nil {
		return nil
	}
	if ci, ok := p.AuthInfo.(*connInfo); ok {
		return ci.conn
	}
	return nil
}

// Hold records a call of the connection of ctx running, until the
// returned func is called: it keeps an unknown connection from the auth
// timeout, and, with EvictIdle, any connection from eviction.
func Hold(ctx context.Context) (done func()) {
	p, _ := peer.FromContext(ctx)
	c := connOf(p)
	if c == nil {
		return func() {}
	}
	c.hold(1)
	return func() { c.hold(-1) }
}

// hold counts a call starting (1) or ending (-1).
func (c *guardedConn) hold(d int32) {
	if !c.creds.EvictIdle {
		c.open.Add(d)
		return
	}
	c.hmu.Lock()
	defer c.hmu.Unlock()
	switch n := c.open.Add(d); {
	case d > 0 && n == 1:
		c.setEvictable(false)
	case d < 0 && n == 0:
		c.setEvictable(true)
	}
}

// closeWithGoAway asks for the GOAWAY and the close: at once if the
// server is between frames and not writing, else once the write in
// progress ends on a frame boundary.
func (c *guardedConn) closeWithGoAway() {
	if c.goaway.Swap(true) {
		return
	}
	if c.wmu.TryLock() {
		c.goAwayAtBoundaryLocked()
		c.wmu.Unlock()
	}
}

func (c *guardedConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	if c.sent {
		c.wmu.Unlock()
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Write(p)
	c.wframes.scan(p[:n], nil)
	c.wmu.Unlock()
	// Checked once the lock is released: closeWithGoAway may have failed
	// to take it while this write held it, and left the GOAWAY to us.
	if c.goaway.Load() {
		c.wmu.Lock()
		c.goAwayAtBoundaryLocked()
		c.wmu.Unlock()
	}
	return n, err
}

// goAwayAtBoundaryLocked writes the GOAWAY and closes the connection, if
// the server is between frames.
func (c *guardedConn) goAwayAtBoundaryLocked() {
	if c.writeGoAwayLocked() {
		c.Close()
	}
}

// writeGoAwayLocked writes a GOAWAY naming the last stream the client
// opened, once, if the server is between frames. It reports whether it
// wrote it.
func (c *guardedConn) writeGoAwayLocked() bool {
	if c.sent || !c.wframes.atBoundary() {
		return false
	}
	c.sent = true
	debug := "closed"
	if err := c.cutErr.Load(); err != nil {
		debug = (*err).Error()
	}
	n := 8 + len(debug)
	f := make([]byte, frameHeaderLen+n)
	f[0], f[1], f[2] = byte(n>>16), byte(n>>8), byte(n)
	f[3] = frameGoAway
	binary.BigEndian.PutUint32(f[9:], c.lastID.Load())
	binary.BigEndian.PutUint32(f[13:], errEnhanceYourCalm)
	copy(f[17:], debug)
	// A client that does not read must not hold this goroutine.
	c.Conn.SetWriteDeadline(time.Now().Add(lingerTime))
	c.Conn.Write(f)
	return true
}

// lingerTime bounds the lingering close of a connection sent a GOAWAY.
const lingerTime = time.Second

// Close closes the connection. One that was sent a GOAWAY is closed
// lingering, as an HTTP server does: its write side first, then what the
// client still sends is read and dropped for up to lingerTime. Closed at
// once with the client's frames unread, the kernel would answer with a
// reset, and the client could lose the GOAWAY to it.
func (c *guardedConn) Close() error {
	if c.authTimer != nil {
		c.authTimer.Stop()
	}
	if !c.goaway.Load() {
		return c.Conn.Close()
	}
	c.linger.Do(func() {
		go func() {
			// gRPC may close the connection before it writes again, so
			// the GOAWAY still owed goes out here, unless the server
			// stopped mid-frame; nothing is written after it.
			c.wmu.Lock()
			c.writeGoAwayLocked()
			c.sent = true
			c.wmu.Unlock()
			if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			c.Conn.SetReadDeadline(time.Now().Add(lingerTime))
			io.Copy(io.Discard, c.Conn)
			c.Conn.Close()
		}()
	})
	return nil
}
