package service

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/wire"
)

const (
	// rawChunkBytes is the read size for TCP raw framing. Large chunks
	// relay fastest (bench: 256 KiB moves about 1.5x the bytes per second
	// of 32 KiB, whose messages, a few bytes over 32 KiB, also spill into
	// gRPC's next buffer-pool class).
	rawChunkBytes = wire.ChunkBytes
	// lineBytes is the line length past which FRAMING_LINES splits a line.
	lineBytes = 32 << 10
	// datagramBytes holds the largest UDP payload.
	datagramBytes = 64 << 10
)

// Emit takes one of a Fetch's results, in order: the connect report,
// pieces of data, expect matches, the summary. It is how a Fetch's results
// leave the service, whoever asked: the gRPC method sends each on its
// stream, a Sweep's dialogue keeps none, the exporter turns them into
// metrics. An error ends the Fetch: the caller is gone. The message is the
// service's until Emit returns, and may be reused after.
type Emit func(*netprobev1.FetchResponse) error

// discard is the Emit of a Sweep's dialogue: what the peer sends is
// counted, not kept.
func discard(*netprobev1.FetchResponse) error { return nil }

// Fetch implements netprobev1.ProbeServiceServer.
func (s *Server) Fetch(req *netprobev1.FetchRequest, stream grpc.ServerStreamingServer[netprobev1.FetchResponse]) error {
	// The stream is sent each piece of data in the buffer it was read
	// into, which its transport frees once written (wire.OutChunk), not a
	// copy of it in a message: the copy was about a tenth of the user CPU
	// of a Fetch (bench pairs; performance.md).
	lend := func(buf mem.Buffer) error { return stream.SendMsg(wire.NewOutChunk(buf)) }
	return s.fetchTo(stream.Context(), req, stream.Send, lend)
}

// lendFunc sends a piece of a Fetch's data in the pooled buffer it was read
// into, without copying it: it takes a reference of its own to keep the
// buffer for as long as the bytes are still to be written. The caller frees
// its own reference when it returns.
type lendFunc func(mem.Buffer) error

// FetchTo runs the Fetch req asks for on behalf of the caller of ctx, and
// hands its results to emit. Like a gRPC method, it returns a status
// error for a request it refuses, and nil for a probe that ran, failed or
// not.
//
// It is split in three so that the frames below which the dial waits stay
// small (see doc.go).
func (s *Server) FetchTo(ctx context.Context, req *netprobev1.FetchRequest, emit Emit) error {
	return s.fetchTo(ctx, req, emit, nil)
}

// fetchTo is FetchTo, with the data of 1 KiB or more handed to lend, when
// not nil, instead of emit.
func (s *Server) fetchTo(ctx context.Context, req *netprobev1.FetchRequest, emit Emit, lend lendFunc) error {
	fp, err := s.validateFetch(req)
	if err != nil {
		return err
	}
	if err := s.grantIdentity(ctx, "tls", fp.tls); err != nil {
		return err
	}
	start := time.Now()
	// Cut ends a Fetch that outlives the shutdown's grace period.
	cctx, done := s.cuttable(ctx)
	defer done()
	pctx, cancel := context.WithTimeout(cctx, fp.timeout)
	defer cancel()
	p := &probing{s: s, ctx: ctx, pctx: pctx, start: start, target: fp.target, tls: fp.tls}
	conn := p.openFetch(fp)
	if conn != nil {
		defer conn.Close()
	}
	return p.fetchOver(conn, fp, req, emit, lend)
}

// openFetch connects and, when asked, shakes hands over TLS. It returns the
// connection to exchange over, or nil with p.resp.Error set.
func (p *probing) openFetch(fp *fetchParams) net.Conn {
	conn := p.connect()
	// With steps, TLS starts where a start_tls step says.
	if conn == nil || fp.tls == nil || len(fp.steps) > 0 {
		return conn
	}
	tc, res, pe := handshake(p.pctx, conn, fp.tls, fp.target, p.start)
	p.resp.Tls, p.resp.Error = res, pe
	if tc == nil {
		conn.Close()
		return nil
	}
	// The exchange crosses TLS; closing tc closes the connection.
	return tc
}

// fetchOver reports the connect phase and runs the exchange over conn,
// when there is one.
func (p *probing) fetchOver(conn net.Conn, fp *fetchParams, req *netprobev1.FetchRequest, emit Emit, lend lendFunc) error {
	ctx, pctx, cresp := p.ctx, p.pctx, p.resp
	if conn != nil {
		if req.GetReverseLookup() {
			cresp.ReverseLookup = p.s.reverseLookup(pctx, conn.RemoteAddr(), p.start)
			cresp.TotalDuration = durationpb.New(time.Since(p.start))
		}
		// A caller who leaves mid-stream, or a Cut, gets the target
		// connection closed at once, not when the probe's timeout runs
		// out; the timeout itself is the connection's deadline.
		stop := context.AfterFunc(pctx, func() {
			if !errors.Is(context.Cause(pctx), context.DeadlineExceeded) {
				conn.Close()
			}
		})
		defer stop()
	}
	markCut(pctx, cresp.Error)
	report := Report{Method: "Fetch", Target: req.GetTarget(), Connect: cresp, Error: cresp.Error}
	defer func() {
		report.Duration = time.Since(p.start)
		p.s.observe(ctx, report)
	}()
	if err := callerGone(ctx); err != nil {
		return err
	}
	if err := refused(cresp.Error); err != nil {
		return err
	}
	if err := emit(&netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Connect{Connect: cresp}}); err != nil {
		return err
	}
	sum := &netprobev1.FetchSummary{}
	report.Summary = sum
	if conn == nil {
		sum.Error = cresp.Error
	} else {
		deadline, _ := pctx.Deadline()
		f := &fetch{fetchParams: fp, ctx: pctx, conn: conn, emit: emit, lend: lend, start: p.start, deadline: deadline, sum: sum}
		if err := f.exchange(); err != nil {
			return err
		}
		if err := callerGone(ctx); err != nil {
			return err
		}
		sum.TcpInfo = tcpInfo(conn)
	}
	if sum.Error != nil {
		sum.EndReason = netprobev1.EndReason_END_REASON_ERROR
		markCut(pctx, sum.Error)
	}
	report.Error = sum.Error
	sum.TotalDuration = durationpb.New(time.Since(p.start))
	if fp.trace != nil {
		// The trace comes after the connection is closed: the target does
		// not hold it open while the trace runs.
		if conn != nil {
			conn.Close()
		}
		sum.Path = p.tracePath(ctx, fp.trace, cresp, sum.Error)
		report.Path = sum.Path
	}
	return emit(&netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Summary{Summary: sum}})
}

// markCut gives pe, a failure of a probe that Cut ended, its reason.
func markCut(pctx context.Context, pe *netprobev1.ProbeError) {
	if pe != nil && errors.Is(context.Cause(pctx), ErrShutdown) {
		pe.Reason, pe.Errno, pe.Message = netprobev1.Reason_REASON_SERVER_SHUTDOWN, "", ErrShutdown.Error()
	}
}

// fetch is one exchange over an open connection.
type fetch struct {
	*fetchParams
	ctx  context.Context
	conn net.Conn
	// emit is where the reply goes; lend, when not nil, where its data in
	// pooled buffers of 1 KiB or more goes.
	emit     Emit
	lend     lendFunc
	start    time.Time
	deadline time.Time
	sum      *netprobev1.FetchSummary
	// msg carries each piece of data to the caller; data is its event.
	msg  *netprobev1.FetchResponse
	data *netprobev1.FetchData
	// pending is what a dialogue received since its last expect matched,
	// less what expectWindow dropped; base is where it starts in the
	// bytes received, and the expect has been shown it up to shown. An
	// expect_line has looked at its lines up to scanned, and for the end
	// of the next up to searched. cut says the next line lost its start
	// to expectWindow.
	pending                        []byte
	base, shown, scanned, searched int
	cut                            bool
	// groups are what the last expect matched, each group cut to
	// maxGroupBytes, for a send_template; nil for a group that took no
	// part.
	groups [][]byte
	// budget is what the expects' matching spends, set by the first.
	budget budget
}

// exchange sends the request, half-closes and receives, recording the
// outcome in f.sum. It returns an error only when the caller's stream
// failed.
func (f *fetch) exchange() error {
	if err := f.conn.SetDeadline(f.deadline); err != nil {
		f.fail(netprobev1.Stage_STAGE_SEND, err)
		return nil
	}
	if len(f.steps) > 0 {
		matched, err := f.dialogue()
		if err != nil || f.sum.Error != nil {
			return err
		}
		if matched {
			f.sum.EndReason = netprobev1.EndReason_END_REASON_MATCHED
			return nil
		}
	}
	if len(f.request) > 0 {
		n, err := f.conn.Write(f.request)
		f.sum.BytesSent = uint64(n)
		if err != nil {
			f.fail(netprobev1.Stage_STAGE_SEND, err)
			return nil
		}
	}
	// TCP and TLS connections close their write side; UDP has none.
	if hc, ok := f.conn.(interface{ CloseWrite() error }); ok && f.halfClose {
		// Shutting the write side down makes a send the peer never took
		// show up here rather than pass for success.
		if err := hc.CloseWrite(); err != nil {
			if sc, ok := f.conn.(syscall.Conn); ok {
				if pending := pendingError(sc); pending != nil {
					err = fmt.Errorf("%w (found by %w)", pending, err)
				}
			}
			f.fail(netprobev1.Stage_STAGE_SHUTDOWN, err)
			return nil
		}
	}
	return f.receive()
}

// receive streams what the peer sends until end of stream, the byte cap or
// a timeout.
func (f *fetch) receive() error {
	// next returns the next chunk; release gives its buffer back once the
	// chunk has been sent; buffer, when not nil, hands the buffer itself
	// over to be sent in (the chunk's first n bytes).
	var (
		next    func() ([]byte, error)
		buffer  func(n int) mem.Buffer
		release = func() {}
	)
	switch f.framing {
	case netprobev1.Framing_FRAMING_LINES:
		br := bufio.NewReaderSize(f.conn, lineBytes)
		next = func() ([]byte, error) {
			line, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				err = nil // a long line goes out in buffer-sized pieces
			}
			return line, err
		}
	case netprobev1.Framing_FRAMING_DATAGRAMS:
		r := newPooledReader(f.conn, datagramBytes)
		next, buffer, release = r.next, r.buffer, r.release
	default:
		r := newPooledReader(f.conn, rawChunkBytes)
		next, buffer, release = r.next, r.buffer, r.release
	}
	datagrams := f.framing == netprobev1.Framing_FRAMING_DATAGRAMS
	for {
		if err := f.idleDeadline(); err != nil {
			f.fail(netprobev1.Stage_STAGE_RECEIVE, err)
			return nil
		}
		chunk, err := next()
		if len(chunk) > 0 || (datagrams && err == nil) {
			capped, sendErr := f.deliver(chunk, buffer)
			release()
			if sendErr != nil {
				return sendErr
			}
			if capped {
				f.sum.EndReason = netprobev1.EndReason_END_REASON_MAX_BYTES
				return nil
			}
		} else {
			release()
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			f.sum.EndReason = netprobev1.EndReason_END_REASON_EOF
			return nil
		case datagrams && f.sum.TimeToFirstByte != nil && errors.Is(err, os.ErrDeadlineExceeded):
			// UDP has no end of stream: silence after an answer ends it.
			f.sum.EndReason = netprobev1.EndReason_END_REASON_IDLE
			return nil
		default:
			f.fail(netprobev1.Stage_STAGE_RECEIVE, err)
			return nil
		}
	}
}

// idleDeadline sets the read deadline for the next read: read_timeout
// from now, within the probe's deadline.
func (f *fetch) idleDeadline() error {
	if f.readTimeout <= 0 {
		return nil
	}
	idle := time.Now().Add(f.readTimeout)
	if idle.After(f.deadline) {
		idle = f.deadline
	}
	return f.conn.SetReadDeadline(idle)
}

// deliver sends a piece of the reply to the caller, cut to what the byte
// cap leaves, and reports whether it reached the cap. buffer, when not
// nil, hands over the buffer that holds the chunk, for f.lend. It returns
// an error only when the caller's stream failed.
func (f *fetch) deliver(chunk []byte, buffer func(n int) mem.Buffer) (capped bool, err error) {
	if f.sum.TimeToFirstByte == nil {
		f.sum.TimeToFirstByte = durationpb.New(time.Since(f.start))
	}
	if left := f.maxBytes - f.sum.BytesReceived; uint64(len(chunk)) > left {
		chunk = chunk[:left]
	}
	switch {
	case f.lend != nil && buffer != nil && !mem.IsBelowBufferPoolingThreshold(len(chunk)):
		buf := buffer(len(chunk))
		err = f.lend(buf)
		buf.Free()
	default:
		if f.msg == nil {
			// One message is reused for every chunk: Emit is done with it
			// when it returns.
			f.data = &netprobev1.FetchData{}
			f.msg = &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Data{Data: f.data}}
		}
		f.data.Data = chunk
		err = f.emit(f.msg)
		f.data.Data = nil
	}
	f.sum.BytesReceived += uint64(len(chunk))
	return f.sum.BytesReceived == f.maxBytes, err
}

func (f *fetch) fail(stage netprobev1.Stage, err error) {
	f.sum.Error = probeError(stage, f.conn.RemoteAddr().String(), err, time.Since(f.start))
}

// pooledReader reads a connection into buffers from wire.Pool, taken only
// once data is waiting, so that an idle Fetch holds none. Its methods
// allocate nothing per read.
type pooledReader struct {
	conn net.Conn
	// raw waits for readability; nil when conn has no descriptor.
	raw   syscall.RawConn
	ready func(fd uintptr) bool
	// size is how much a read asks for.
	size int
	buf  *[]byte
	peek [1]byte
	// peekErr is the error the last peek met.
	peekErr error
}

func newPooledReader(conn net.Conn, size int) *pooledReader {
	r := &pooledReader{conn: conn, size: size}
	if sc, ok := conn.(syscall.Conn); ok {
		r.raw, _ = sc.SyscallConn()
	}
	r.ready = r.readable
	return r
}

// next waits for data, within conn's read deadline, then reads it.
func (r *pooledReader) next() ([]byte, error) {
	if r.raw != nil {
		r.peekErr = nil
		if err := r.raw.Read(r.ready); err != nil {
			return nil, err
		}
		if r.peekErr != nil {
			return nil, os.NewSyscallError("recvfrom", r.peekErr)
		}
	}
	r.buf = wire.Pool.Get(r.size)
	n, err := r.conn.Read(*r.buf)
	return (*r.buf)[:n], err
}

// buffer hands over the last buffer, holding its first n bytes: it goes
// back to the pool once every reference to it is freed, not at release.
func (r *pooledReader) buffer(n int) mem.Buffer {
	*r.buf = (*r.buf)[:n]
	b := mem.NewBuffer(r.buf, wire.Pool)
	r.buf = nil
	return b
}

// release gives the last buffer back, unless it was handed over.
func (r *pooledReader) release() {
	if r.buf != nil {
		wire.Pool.Put(r.buf)
		r.buf = nil
	}
}
