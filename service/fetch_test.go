package service_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// fetched is a whole Fetch stream.
type fetched struct {
	connect *netprobev1.ConnectResponse
	data    [][]byte
	summary *netprobev1.FetchSummary
	// matches are the expect steps' matches, each after the data that
	// completed it: received tells how many bytes had come before.
	matches  []*netprobev1.ExpectMatch
	received []int
}

func (f *fetched) bytes() []byte { return bytes.Join(f.data, nil) }

// fetch runs a Fetch to its end and checks the stream's shape: one connect
// message, data, one summary.
func fetch(t *testing.T, client netprobev1.ProbeServiceClient, req *netprobev1.FetchRequest) *fetched {
	t.Helper()
	stream, err := client.Fetch(probetest.Context(t), req)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return drain(t, stream)
}

func drain(t *testing.T, stream grpc.ServerStreamingClient[netprobev1.FetchResponse]) *fetched {
	t.Helper()
	f := &fetched{}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		switch ev := msg.Event.(type) {
		case *netprobev1.FetchResponse_Connect:
			if f.connect != nil || f.summary != nil {
				t.Fatalf("connect message out of place")
			}
			f.connect = ev.Connect
		case *netprobev1.FetchResponse_Data:
			if f.connect == nil || f.summary != nil {
				t.Fatalf("data message out of place")
			}
			f.data = append(f.data, ev.Data.Data)
		case *netprobev1.FetchResponse_Match:
			if f.connect == nil || f.summary != nil {
				t.Fatalf("match message out of place")
			}
			f.matches = append(f.matches, ev.Match)
			f.received = append(f.received, len(f.bytes()))
		case *netprobev1.FetchResponse_Summary:
			if f.connect == nil || f.summary != nil {
				t.Fatalf("summary message out of place")
			}
			f.summary = ev.Summary
		}
	}
	if f.summary == nil {
		t.Fatal("stream ended without a summary")
	}
	if f.summary.TotalDuration == nil {
		t.Error("summary lacks total_duration")
	}
	if got := uint64(len(f.bytes())); got != f.summary.BytesReceived {
		t.Errorf("delivered %d bytes, summary says %d", got, f.summary.BytesReceived)
	}
	return f
}

// check checks that the fetch connected, how it ended, and each data
// message it delivered.
func (f *fetched) check(t *testing.T, want *wantError, wantEnd netprobev1.EndReason, wantData []string) {
	t.Helper()
	checkError(t, f.connect.Error, nil)
	checkError(t, f.summary.Error, want)
	if f.summary.EndReason != wantEnd {
		t.Errorf("end reason = %v, want %v", f.summary.EndReason, wantEnd)
	}
	var data []string
	for _, d := range f.data {
		data = append(data, string(d))
	}
	if diff := cmp.Diff(wantData, data); diff != "" {
		t.Errorf("data (-want +got):\n%s", diff)
	}
}

func tcpTarget(port uint32) *netprobev1.Target {
	return &netprobev1.Target{Host: "127.0.0.1", Port: port}
}

func TestFetch(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t, probetest.WithMaxPayload(32<<20))
	large := bytes.Repeat([]byte("x"), 16<<20)

	tests := []struct {
		name string
		// handle serves the target; its port goes into the request.
		handle   func(net.Conn)
		req      *netprobev1.FetchRequest
		want     *wantError
		wantEnd  netprobev1.EndReason
		wantData []string
		wantSent uint64
	}{
		{
			name:     "echo after half-close",
			handle:   probetest.Echo,
			req:      &netprobev1.FetchRequest{Request: &netprobev1.FetchRequest_Payload{Payload: []byte("ping\n")}},
			wantEnd:  netprobev1.EndReason_END_REASON_EOF,
			wantData: []string{"ping\n"},
			wantSent: 5,
		},
		{
			name: "lines framing",
			handle: func(c net.Conn) {
				c.Write([]byte("a\nbb\r\nccc"))
				c.Close()
			},
			req:      &netprobev1.FetchRequest{Framing: netprobev1.Framing_FRAMING_LINES},
			wantEnd:  netprobev1.EndReason_END_REASON_EOF,
			wantData: []string{"a\n", "bb\r\n", "ccc"},
		},
		{
			name: "byte cap",
			handle: func(c net.Conn) {
				c.Write(bytes.Repeat([]byte("y"), 100<<10))
				probetest.ReadAll(c)
			},
			req:      &netprobev1.FetchRequest{MaxBytes: 1000},
			wantEnd:  netprobev1.EndReason_END_REASON_MAX_BYTES,
			wantData: []string{string(bytes.Repeat([]byte("y"), 1000))},
		},
		{
			name: "reset after the request",
			handle: func(c net.Conn) {
				probetest.ReadAll(c)
				probetest.Reset(c)
			},
			req:      &netprobev1.FetchRequest{Request: &netprobev1.FetchRequest_Payload{Payload: []byte("ping")}},
			want:     &wantError{stage: netprobev1.Stage_STAGE_RECEIVE, reason: netprobev1.Reason_REASON_RESET, errno: "ECONNRESET"},
			wantEnd:  netprobev1.EndReason_END_REASON_ERROR,
			wantSent: 4,
		},
		{
			name: "reply then silence: idle read timeout",
			handle: func(c net.Conn) {
				c.Write([]byte("hello\n"))
				probetest.ReadAll(c)
				probetest.WaitClosed(c)
			},
			req:      &netprobev1.FetchRequest{ReadTimeout: durationpb.New(200 * time.Millisecond)},
			want:     &wantError{stage: netprobev1.Stage_STAGE_RECEIVE, reason: netprobev1.Reason_REASON_TIMEOUT},
			wantEnd:  netprobev1.EndReason_END_REASON_ERROR,
			wantData: []string{"hello\n"},
		},
		{
			// The target reads a byte and closes with the rest unread, so
			// its kernel resets the connection while the probe is still
			// writing: 16 MiB cannot fit in loopback's socket buffers.
			name: "peer closes before reading a large payload",
			handle: func(c net.Conn) {
				c.Read(make([]byte, 1))
				c.Close()
			},
			req:     &netprobev1.FetchRequest{Request: &netprobev1.FetchRequest_Payload{Payload: large}},
			want:    &wantError{stage: netprobev1.Stage_STAGE_SEND, reason: netprobev1.Reason_REASON_RESET, errno: "ECONNRESET"},
			wantEnd: netprobev1.EndReason_END_REASON_ERROR,
		},
		{
			// The target half-closes first, so the probe's side is in
			// CLOSE_WAIT when the reset comes: the kernel reports EPIPE.
			name: "peer half-closes, then closes while the payload is sent",
			handle: func(c net.Conn) {
				c.(*net.TCPConn).CloseWrite()
				c.Read(make([]byte, 1))
				c.Close()
			},
			req:     &netprobev1.FetchRequest{Request: &netprobev1.FetchRequest_Payload{Payload: large}},
			want:    &wantError{stage: netprobev1.Stage_STAGE_SEND, reason: netprobev1.Reason_REASON_BROKEN_PIPE, errno: "EPIPE"},
			wantEnd: netprobev1.EndReason_END_REASON_ERROR,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tg := probetest.Listen(t, "127.0.0.1:0", tt.handle)
			tt.req.Target = tcpTarget(tg.Port())
			f := fetch(t, e.Probe, tt.req)
			if f.connect.PeerAddress != tg.Addr() {
				t.Errorf("connected to %q, want %q", f.connect.PeerAddress, tg.Addr())
			}
			f.check(t, tt.want, tt.wantEnd, tt.wantData)
			if tt.wantSent != 0 && f.summary.BytesSent != tt.wantSent {
				t.Errorf("bytes sent = %d, want %d", f.summary.BytesSent, tt.wantSent)
			}
			if len(tt.wantData) > 0 && f.summary.TimeToFirstByte == nil {
				t.Error("no time to first byte")
			}
		})
	}
}

// TestFetchShutdownReset makes the target reset the connection between the
// probe's connect and its half-close: the reverse lookup that comes between
// them starts once the probe is connected, and its answer is held until the
// target has reset.
func TestFetchShutdownReset(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	tg := probetest.Listen(t, "127.0.0.4:0", probetest.ResetDuringReverseLookup(e.DNS, netip.MustParseAddr("127.0.0.4")))
	f := fetch(t, e.Probe, &netprobev1.FetchRequest{
		Target:        &netprobev1.Target{Host: "127.0.0.4", Port: tg.Port()},
		ReverseLookup: true,
	})
	checkError(t, f.connect.Error, nil)
	checkError(t, f.summary.Error, &wantError{stage: netprobev1.Stage_STAGE_SHUTDOWN, reason: netprobev1.Reason_REASON_RESET, errno: "ECONNRESET"})
}

func TestFetchConnectFailure(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	port := probetest.ClosedPort(t, "tcp4", "127.0.0.1:0")
	f := fetch(t, e.Probe, &netprobev1.FetchRequest{Target: tcpTarget(port)})
	want := &wantError{stage: netprobev1.Stage_STAGE_CONNECT, reason: netprobev1.Reason_REASON_REFUSED, errno: "ECONNREFUSED"}
	checkError(t, f.connect.Error, want)
	checkError(t, f.summary.Error, want)
	if f.summary.EndReason != netprobev1.EndReason_END_REASON_ERROR || len(f.data) != 0 {
		t.Errorf("end reason %v, %d data messages", f.summary.EndReason, len(f.data))
	}
}

func TestFetchHTTPGet(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	type seen struct{ Method, Proto, URI, Host string }
	got := make(chan seen, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Method, r.Proto, r.RequestURI, r.Host}
		io.WriteString(w, "hello from net/http\n")
	}))
	t.Cleanup(hs.Close)
	u, err := url.Parse(hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.ParseUint(u.Port(), 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	f := fetch(t, e.Probe, &netprobev1.FetchRequest{
		Target:  tcpTarget(uint32(port)),
		Request: &netprobev1.FetchRequest_HttpGet{HttpGet: &netprobev1.HttpGet{Path: "/status?full=1", Host: "example.test"}},
	})
	checkError(t, f.summary.Error, nil)
	if diff := cmp.Diff(seen{"GET", "HTTP/1.0", "/status?full=1", "example.test"}, <-got); diff != "" {
		t.Errorf("request the server saw (-want +got):\n%s", diff)
	}
	body := string(f.bytes())
	if !bytes.HasPrefix([]byte(body), []byte("HTTP/1.0 200 OK\r\n")) || !bytes.HasSuffix([]byte(body), []byte("\r\n\r\nhello from net/http\n")) {
		t.Errorf("response = %q", body)
	}
	if f.summary.EndReason != netprobev1.EndReason_END_REASON_EOF {
		t.Errorf("end reason = %v", f.summary.EndReason)
	}
}

func TestFetchUDP(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	echoPC, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoDone := make(chan struct{})
	go func() {
		defer close(echoDone)
		buf := make([]byte, 2048)
		for {
			n, from, err := echoPC.ReadFrom(buf)
			if err != nil {
				return
			}
			echoPC.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() { echoPC.Close(); <-echoDone })
	// A socket that never answers.
	silentPC, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silentPC.Close() })
	closedPC, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := closedPC.LocalAddr().(*net.UDPAddr).Port
	closedPC.Close()

	udp := func(pc int) *netprobev1.Target {
		return &netprobev1.Target{Host: "127.0.0.1", Port: uint32(pc), Network: netprobev1.Network_NETWORK_UDP}
	}
	ping := &netprobev1.FetchRequest_Payload{Payload: []byte("ping")}
	tests := []struct {
		name     string
		req      *netprobev1.FetchRequest
		want     *wantError
		wantEnd  netprobev1.EndReason
		wantData []string
	}{
		{
			name:     "echo ends when the peer falls silent",
			req:      &netprobev1.FetchRequest{Target: udp(echoPC.LocalAddr().(*net.UDPAddr).Port), Request: ping, ReadTimeout: durationpb.New(200 * time.Millisecond)},
			wantEnd:  netprobev1.EndReason_END_REASON_IDLE,
			wantData: []string{"ping"},
		},
		{
			name:    "closed port: ICMP port unreachable",
			req:     &netprobev1.FetchRequest{Target: udp(closed), Request: ping},
			want:    &wantError{stage: netprobev1.Stage_STAGE_RECEIVE, reason: netprobev1.Reason_REASON_REFUSED, errno: "ECONNREFUSED"},
			wantEnd: netprobev1.EndReason_END_REASON_ERROR,
		},
		{
			name:    "no answer",
			req:     &netprobev1.FetchRequest{Target: udp(silentPC.LocalAddr().(*net.UDPAddr).Port), Request: ping, Timeout: durationpb.New(300 * time.Millisecond)},
			want:    &wantError{stage: netprobev1.Stage_STAGE_RECEIVE, reason: netprobev1.Reason_REASON_TIMEOUT},
			wantEnd: netprobev1.EndReason_END_REASON_ERROR,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := fetch(t, e.Probe, tt.req)
			f.check(t, tt.want, tt.wantEnd, tt.wantData)
			if f.summary.BytesSent != 4 {
				t.Errorf("bytes sent = %d, want 4", f.summary.BytesSent)
			}
		})
	}
}

// TestFetchCancel checks that a caller who cancels mid-stream gets the
// target connection closed at once, not when the probe times out.
func TestFetchCancel(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	closed := make(chan error, 1)
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("first chunk"))
		closed <- probetest.WaitClosed(c)
	})
	ctx, cancel := context.WithCancel(probetest.Context(t))
	defer cancel()
	stream, err := e.Probe.Fetch(ctx, &netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Timeout: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"connect", "data"} {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv %s: %v", want, err)
		}
		if (want == "connect") != (msg.GetConnect() != nil) {
			t.Fatalf("got %v, want %s", msg, want)
		}
	}
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("Recv after cancel = %v, want CANCELED", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("target connection still open %v after the cancel: %v", probetest.Timeout, err)
	}
}
