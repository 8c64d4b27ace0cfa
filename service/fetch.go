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

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

const (
	// streamChunkBytes is the read size for TCP raw framing, and the line
	// length past which FRAMING_LINES splits a line.
	streamChunkBytes = 32 << 10
	// datagramBytes holds the largest UDP payload.
	datagramBytes = 64 << 10
)

// Fetch implements netprobev1.ProbeServiceServer.
func (s *Server) Fetch(req *netprobev1.FetchRequest, stream grpc.ServerStreamingServer[netprobev1.FetchResponse]) error {
	p, err := s.validateFetch(req)
	if err != nil {
		return err
	}
	ctx := stream.Context()
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	conn, cresp := s.connect(pctx, p.target, start)
	if conn != nil {
		defer conn.Close()
		if req.GetReverseLookup() {
			cresp.ReverseLookup = s.reverseLookup(pctx, conn.RemoteAddr(), start)
			cresp.TotalDuration = durationpb.New(time.Since(start))
		}
		// A caller who leaves mid-stream gets the target connection closed
		// at once, not when the probe's timeout runs out.
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		defer stop()
	}
	report := Report{Method: "Fetch", Target: req.GetTarget(), Connect: cresp, Error: cresp.Error}
	defer func() { s.observe(ctx, report) }()
	if err := callerGone(ctx); err != nil {
		return err
	}
	if err := refused(cresp.Error); err != nil {
		return err
	}
	if err := stream.Send(&netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Connect{Connect: cresp}}); err != nil {
		return err
	}
	sum := &netprobev1.FetchSummary{}
	report.Summary = sum
	if conn == nil {
		sum.Error = cresp.Error
	} else {
		deadline, _ := pctx.Deadline()
		f := fetch{fetchParams: p, conn: conn, stream: stream, start: start, deadline: deadline, sum: sum}
		if err := f.exchange(); err != nil {
			return err
		}
		if err := callerGone(ctx); err != nil {
			return err
		}
	}
	if sum.Error != nil {
		sum.EndReason = netprobev1.EndReason_END_REASON_ERROR
	}
	report.Error = sum.Error
	sum.TotalDuration = durationpb.New(time.Since(start))
	return stream.Send(&netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Summary{Summary: sum}})
}

// fetch is one exchange over an open connection.
type fetch struct {
	fetchParams
	conn     net.Conn
	stream   grpc.ServerStreamingServer[netprobev1.FetchResponse]
	start    time.Time
	deadline time.Time
	sum      *netprobev1.FetchSummary
}

// exchange sends the request, half-closes and receives, recording the
// outcome in f.sum. It returns an error only when the caller's stream
// failed.
func (f *fetch) exchange() error {
	if err := f.conn.SetDeadline(f.deadline); err != nil {
		f.fail(netprobev1.Stage_STAGE_SEND, err)
		return nil
	}
	if len(f.request) > 0 {
		n, err := f.conn.Write(f.request)
		f.sum.BytesSent = uint64(n)
		if err != nil {
			f.fail(netprobev1.Stage_STAGE_SEND, err)
			return nil
		}
	}
	if tcp, ok := f.conn.(*net.TCPConn); ok && f.halfClose {
		// Shutting the write side down makes a send the peer never took
		// show up here rather than pass for success.
		if err := tcp.CloseWrite(); err != nil {
			if pending := pendingError(tcp); pending != nil {
				err = fmt.Errorf("%w (found by %w)", pending, err)
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
	var next func() ([]byte, error)
	switch f.framing {
	case netprobev1.Framing_FRAMING_LINES:
		br := bufio.NewReaderSize(f.conn, streamChunkBytes)
		next = func() ([]byte, error) {
			line, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				err = nil // a long line goes out in buffer-sized pieces
			}
			return line, err
		}
	default:
		size := streamChunkBytes
		if f.framing == netprobev1.Framing_FRAMING_DATAGRAMS {
			size = datagramBytes
		}
		buf := make([]byte, size)
		next = func() ([]byte, error) {
			n, err := f.conn.Read(buf)
			return buf[:n], err
		}
	}
	datagrams := f.framing == netprobev1.Framing_FRAMING_DATAGRAMS
	// One message is reused for every chunk: Send marshals it before it
	// returns, and nothing on this server keeps messages past that.
	data := &netprobev1.FetchData{}
	msg := &netprobev1.FetchResponse{Event: &netprobev1.FetchResponse_Data{Data: data}}
	for {
		if f.readTimeout > 0 {
			idle := time.Now().Add(f.readTimeout)
			if idle.After(f.deadline) {
				idle = f.deadline
			}
			if err := f.conn.SetReadDeadline(idle); err != nil {
				f.fail(netprobev1.Stage_STAGE_RECEIVE, err)
				return nil
			}
		}
		chunk, err := next()
		if len(chunk) > 0 || (datagrams && err == nil) {
			if f.sum.TimeToFirstByte == nil {
				f.sum.TimeToFirstByte = durationpb.New(time.Since(f.start))
			}
			if left := f.maxBytes - f.sum.BytesReceived; uint64(len(chunk)) > left {
				chunk = chunk[:left]
			}
			data.Data = chunk
			if err := f.stream.Send(msg); err != nil {
				return err
			}
			f.sum.BytesReceived += uint64(len(chunk))
			if f.sum.BytesReceived == f.maxBytes {
				f.sum.EndReason = netprobev1.EndReason_END_REASON_MAX_BYTES
				return nil
			}
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

func (f *fetch) fail(stage netprobev1.Stage, err error) {
	f.sum.Error = probeError(stage, f.conn.RemoteAddr().String(), err, time.Since(f.start))
}

// pendingError returns the error the kernel holds for the socket (SO_ERROR):
// after a failed shutdown, the reset that closed the connection under it.
func pendingError(c syscall.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var soErr int
	var getErr error
	if err := raw.Control(func(fd uintptr) {
		soErr, getErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
	}); err != nil || getErr != nil || soErr == 0 {
		return nil
	}
	return os.NewSyscallError("getsockopt SO_ERROR", syscall.Errno(soErr))
}
