package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/wire"
)

// Framing is how the server cuts the reply into messages; see Fetch.Next.
type Framing = netprobev1.Framing

// The framings. Unspecified is raw chunks for TCP, datagrams for UDP.
const (
	FramingRaw       = netprobev1.Framing_FRAMING_RAW
	FramingLines     = netprobev1.Framing_FRAMING_LINES
	FramingDatagrams = netprobev1.Framing_FRAMING_DATAGRAMS
)

// EndReason is how a fetch that did not fail ended.
type EndReason = netprobev1.EndReason

// The ways a fetch ends.
const (
	EndEOF      = netprobev1.EndReason_END_REASON_EOF
	EndMaxBytes = netprobev1.EndReason_END_REASON_MAX_BYTES
	EndIdle     = netprobev1.EndReason_END_REASON_IDLE
	EndError    = netprobev1.EndReason_END_REASON_ERROR
	EndMatched  = netprobev1.EndReason_END_REASON_MATCHED
)

// FetchOptions says what to send and how to receive. The zero value sends
// nothing, half-closes, and reads until end of stream with the server's
// default timeout and byte cap.
type FetchOptions struct {
	// Timeout bounds the whole exchange; zero is the server's default. The
	// ctx deadline, when sooner, wins.
	Timeout time.Duration
	// ReadTimeout ends the fetch when the reply stops for this long: a
	// RECEIVE timeout for TCP, a clean end (EndIdle) for UDP once something
	// came back. Zero means only Timeout applies.
	ReadTimeout time.Duration
	// Payload is sent as it is. At most one of Payload and HTTPGet.
	Payload []byte
	// HTTPGet sends an HTTP/1.0 GET instead of a payload.
	HTTPGet *HTTPGet
	// MaxBytes caps the bytes received (zero: the server's cap); reaching
	// it ends the fetch cleanly with EndMaxBytes.
	MaxBytes uint64
	// Framing chooses the message boundaries Next returns.
	Framing Framing
	// KeepWriteOpen leaves the write side open after sending (TCP only); by
	// default it is half-closed so the peer sees the end of the request.
	KeepWriteOpen bool
	// ReverseLookup asks for the peer address's names once connected.
	ReverseLookup bool
	// TLS, when set, makes the exchange a TLS stream; Connect.TLS reports
	// the handshake. With Steps, it is the options of their StartTLS.
	TLS *TLSOptions
	// Steps are a dialogue, instead of Payload or HTTPGet: what to send,
	// what to expect back, when to start TLS (see Send, Expect, StartTLS).
	Steps []Step
	// Source, when set, is the local address to connect from.
	Source netip.Addr
	// Trace, when set, also traces the network path to the address the
	// fetch reached or failed at, once the exchange is over (see
	// TraceOptions): on failure, the connect's or the exchange's.
	// FetchSummary.Path reports it.
	Trace *TraceOptions
}

// Step is one step of a Fetch's dialogue: one of Send, SendTemplate,
// Expect, ExpectLine and StartTLS, and for an Expect or ExpectLine its
// Refusal.
type Step struct {
	// Send is written to the peer.
	Send []byte
	// SendTemplate is written to the peer with $1, ${1} and ${name} in
	// it replaced by the groups of the previous Expect's match, as
	// regexp.Expand does.
	SendTemplate string
	// Expect is an RE2 regular expression that what comes back must
	// match, line by line (^ and $ at line boundaries).
	Expect string
	// ExpectLine is an RE2 regular expression one line that comes back
	// must match, on its own and without its terminator.
	ExpectLine string
	// StartTLS starts TLS with FetchOptions.TLS.
	StartTLS bool
	// Refusal, on an Expect or ExpectLine, is an RE2 regular expression
	// of the replies by which the peer refuses there: when one comes
	// before what the step expects, the step fails at once (StageExpect,
	// ReasonNoMatch, the message quoting it), where it would wait until
	// the peer closes or the timeout. It is read as the step's own
	// expression, on a line for an ExpectLine; for an Expect, whose $
	// matches where what has come so far ends, a refusal of a whole line
	// ends with \n. The probe server refuses it on any other step.
	Refusal string
}

// Match is what an Expect step matched.
type Match struct {
	// Step is the index of the step in FetchOptions.Steps.
	Step int
	// Groups are the match and its groups, in the order of the
	// expression's parentheses; each is at most 1 KiB.
	Groups [][]byte
}

// Send is a step that writes b.
func Send(b string) Step { return Step{Send: []byte(b)} }

// Expect is a step that waits for what matches re.
func Expect(re string) Step { return Step{Expect: re} }

// StartTLS is a step that starts TLS.
func StartTLS() Step { return Step{StartTLS: true} }

// stepsProto converts a dialogue; a step that sets none or several of
// its fields is an error.
func stepsProto(steps []Step) ([]*netprobev1.Step, error) {
	out := make([]*netprobev1.Step, len(steps))
	for i, st := range steps {
		var actions []*netprobev1.Step
		if st.Send != nil {
			actions = append(actions, &netprobev1.Step{Action: &netprobev1.Step_Send{Send: st.Send}})
		}
		if st.SendTemplate != "" {
			actions = append(actions, &netprobev1.Step{Action: &netprobev1.Step_SendTemplate{SendTemplate: st.SendTemplate}})
		}
		if st.Expect != "" {
			actions = append(actions, &netprobev1.Step{Action: &netprobev1.Step_Expect{Expect: st.Expect}})
		}
		if st.ExpectLine != "" {
			actions = append(actions, &netprobev1.Step{Action: &netprobev1.Step_ExpectLine{ExpectLine: st.ExpectLine}})
		}
		if st.StartTLS {
			actions = append(actions, &netprobev1.Step{Action: &netprobev1.Step_StartTls{StartTls: true}})
		}
		if len(actions) != 1 {
			return nil, fmt.Errorf("netprobe: fetch: step %d: set one of Send, SendTemplate, Expect, ExpectLine and StartTLS", i)
		}
		out[i] = actions[0]
		out[i].Refusal = st.Refusal
	}
	return out, nil
}

// HTTPGet is an HTTP/1.0 GET request.
type HTTPGet struct {
	// Path is the request target; it must start with "/".
	Path string
	// Host is the Host header; empty sends none (HTTP/1.0 needs none).
	Host string
}

// FetchSummary is the end of a fetch.
type FetchSummary struct {
	// BytesSent and BytesReceived count what crossed the target connection.
	BytesSent, BytesReceived uint64
	// TimeToFirstByte is from the probe's start to the first byte of the
	// reply; zero when nothing came back.
	TimeToFirstByte time.Duration
	// TotalDuration is the whole probe.
	TotalDuration time.Duration
	// EndReason is how the fetch ended.
	EndReason EndReason
	// TCPInfo is the kernel's view of the connection at the end.
	TCPInfo *TCPInfo
	// TLS is the handshake of a StartTLS step, when it got that far.
	TLS *TLSResult
	// Path is the network path to the address fetched from, when
	// FetchOptions.Trace asked for one and the fetch got as far as an
	// address. TotalDuration does not count it.
	Path *Path

	proto *netprobev1.FetchSummary
}

// Proto returns the summary as the server sent it.
func (s *FetchSummary) Proto() *netprobev1.FetchSummary { return s.proto }

// Fetch is the reply of a target, read as it streams in. It is an
// io.ReadCloser: Read returns io.EOF after a clean end, or the *ProbeError of
// a failed exchange after the bytes that came before it. A Fetch is not safe
// for concurrent use.
type Fetch struct {
	// Connect is the report of the connect phase.
	Connect *ConnectResult

	stream grpc.ServerStreamingClient[netprobev1.FetchResponse]
	cancel context.CancelFunc
	// chunk holds the message last received, whose data aliases the
	// buffer it arrived in until the next receive or Close.
	chunk   wire.Chunk
	pending []byte // the unread rest of the current message
	summary *FetchSummary
	err     error // what Read returns once pending is empty, when set
	matches []Match
}

// Matches returns what the dialogue's Expect steps matched so far: each
// arrives after the bytes it matched.
func (f *Fetch) Matches() []Match { return f.matches }

// Fetch asks the probe server to connect to address on network, send the
// request in opts, half-close, and stream the reply back. It returns once
// the connection is made; read the reply from the returned Fetch and Close
// it when done (Close before the end abandons the exchange, and the server
// closes the target connection at once).
//
// A failure to connect returns a *ProbeError whose Connect and Summary say
// how far the probe went; any other error is the call's own.
func (c *Client) Fetch(ctx context.Context, network, address string, opts FetchOptions) (*Fetch, error) {
	t, err := target(network, address)
	if err != nil {
		return nil, err
	}
	req := &netprobev1.FetchRequest{
		Target:        t,
		MaxBytes:      opts.MaxBytes,
		Framing:       opts.Framing,
		KeepWriteOpen: opts.KeepWriteOpen,
		ReverseLookup: opts.ReverseLookup,
		Tls:           opts.TLS.proto(),
		Trace:         opts.Trace.proto(),
	}
	if opts.Timeout != 0 {
		req.Timeout = durationpb.New(opts.Timeout)
	}
	if opts.ReadTimeout != 0 {
		req.ReadTimeout = durationpb.New(opts.ReadTimeout)
	}
	t.SourceAddress = sourceAddress(opts.Source)
	if len(opts.Steps) > 0 {
		if req.Steps, err = stepsProto(opts.Steps); err != nil {
			return nil, err
		}
	}
	switch {
	case opts.HTTPGet != nil && opts.Payload != nil:
		return nil, errors.New("netprobe: fetch: set Payload or HTTPGet, not both")
	case opts.HTTPGet != nil:
		req.Request = &netprobev1.FetchRequest_HttpGet{HttpGet: &netprobev1.HttpGet{Path: opts.HTTPGet.Path, Host: opts.HTTPGet.Host}}
	case opts.Payload != nil:
		req.Request = &netprobev1.FetchRequest_Payload{Payload: opts.Payload}
	}

	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.probe.Fetch(ctx, req, wire.CallOption())
	if err != nil {
		cancel()
		return nil, err
	}
	f := &Fetch{stream: stream, cancel: cancel}
	msg, err := f.recv()
	if err != nil {
		cancel()
		return nil, err
	}
	connect := msg.GetConnect()
	if connect == nil {
		cancel()
		return nil, fmt.Errorf("netprobe: fetch: the server sent %T before the connect report", msg.GetEvent())
	}
	f.Connect = newConnectResult(connect)
	if connect.GetError() != nil {
		// The summary follows at once; it carries the total duration.
		_, err := f.Next()
		cancel()
		return nil, err
	}
	return f, nil
}

// Read reads the reply as one byte stream, whatever the framing.
func (f *Fetch) Read(p []byte) (int, error) {
	// An empty datagram is no bytes to a reader: skip it.
	for len(f.pending) == 0 {
		b, err := f.Next()
		if err != nil {
			return 0, err
		}
		f.pending = b
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

// Next returns the next message of the reply, or what is left of it after
// Read: a raw chunk, a line with its terminator (FramingLines) or a datagram
// (FramingDatagrams, where it may be empty). The bytes are valid until the
// next call to Next, Read or Close. At the end it returns io.EOF or the
// *ProbeError.
func (f *Fetch) Next() ([]byte, error) {
	if len(f.pending) > 0 {
		b := f.pending
		f.pending = nil
		return b, nil
	}
	if f.err != nil {
		return nil, f.err
	}
	var err error
	for err == nil {
		var msg *netprobev1.FetchResponse
		if msg, err = f.recv(); err != nil {
			break
		}
		switch ev := msg.GetEvent().(type) {
		case *netprobev1.FetchResponse_Data:
			return ev.Data.GetData(), nil
		case *netprobev1.FetchResponse_Match:
			f.matches = append(f.matches, newMatch(ev.Match))
		case *netprobev1.FetchResponse_Summary:
			f.finish(ev.Summary)
			err = f.err
		case *netprobev1.FetchResponse_Connect:
			err = errors.New("netprobe: fetch: the server sent a second connect report")
		}
		// An event this client does not know is skipped.
	}
	// The call is over: release it without waiting for Close.
	f.err = err
	f.cancel()
	return nil, err
}

// newMatch copies m out of the buffer it arrived in.
func newMatch(m *netprobev1.ExpectMatch) Match {
	groups := make([][]byte, len(m.GetGroups()))
	for i, g := range m.GetGroups() {
		groups[i] = bytes.Clone(g)
	}
	return Match{Step: int(m.GetStep()), Groups: groups}
}

func newFetchSummary(s *netprobev1.FetchSummary) *FetchSummary {
	return &FetchSummary{
		BytesSent:       s.GetBytesSent(),
		BytesReceived:   s.GetBytesReceived(),
		TimeToFirstByte: s.GetTimeToFirstByte().AsDuration(),
		TotalDuration:   s.GetTotalDuration().AsDuration(),
		EndReason:       s.GetEndReason(),
		TCPInfo:         newTCPInfo(s.GetTcpInfo()),
		TLS:             newTLSResult(s.GetTls()),
		Path:            newPath(s.GetPath()),
		proto:           s,
	}
}

// finish records the summary and the error Read ends with.
func (f *Fetch) finish(s *netprobev1.FetchSummary) {
	f.summary = newFetchSummary(s)
	f.err = io.EOF
	if pe := newProbeError(s.GetError()); pe != nil {
		pe.Connect = f.Connect
		pe.Summary = f.summary
		pe.Path = f.summary.Path
		f.err = pe
	}
}

// recv reads the next message; the stream ending before the summary is an
// unexpected EOF, never a clean end.
func (f *Fetch) recv() (*netprobev1.FetchResponse, error) {
	err := f.stream.RecvMsg(&f.chunk)
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("netprobe: fetch: the stream ended before the summary: %w", io.ErrUnexpectedEOF)
	}
	if err != nil {
		return nil, err
	}
	return f.chunk.FetchResponse, nil
}

// Summary returns the fetch's summary once Read or Next has returned io.EOF
// or a *ProbeError; nil before that.
func (f *Fetch) Summary() *FetchSummary { return f.summary }

// Close ends the call. Before the end of the reply, it abandons the
// exchange.
func (f *Fetch) Close() error {
	f.cancel()
	f.pending = nil
	f.chunk.Release()
	return nil
}
