package service_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

func send(b string) *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_Send{Send: []byte(b)}}
}

func expect(re string) *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_Expect{Expect: re}}
}

func startTLS() *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_StartTls{StartTls: true}}
}

// TestDialogue runs steps against targets that answer, answer wrong, close,
// stay silent or flood: each ends as the API says, with the failing step
// named.
func TestDialogue(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	got := make(chan string, 16)
	smtp := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("220 mail ESMTP\r\n"))
		r := bufio.NewReader(c)
		var heard strings.Builder
		for {
			line, err := r.ReadString('\n')
			heard.WriteString(line)
			switch {
			case err != nil:
				got <- heard.String()
				c.Close()
				return
			case strings.HasPrefix(line, "EHLO"):
				c.Write([]byte("250-mail\r\n250 SIZE 1000\r\n"))
			case strings.HasPrefix(line, "QUIT"):
				c.Write([]byte("221 bye\r\n"))
			}
		}
	})
	wrong := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n<html>not mail</html>"))
		c.Close()
	})
	flood := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte(strings.Repeat("x", 4096)))
		probetest.WaitClosed(c)
	})
	silent := probetest.Listen(t, "127.0.0.1:0", nil)
	// reset waits for a line, so that the probe has connected, then
	// resets.
	reset := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		bufio.NewReader(c).ReadString('\n')
		c.Write([]byte("220-"))
		probetest.Reset(c)
	})
	addr := func(tg *probetest.Target) string { return tg.Addr() }

	tests := []struct {
		name     string
		target   *probetest.Target
		steps    []*netprobev1.Step
		maxBytes uint64
		timeout  time.Duration
		want     *wantError
		step     uint32
		end      netprobev1.EndReason
		// message is the error's message; "..." in it stands for any text.
		message string
	}{
		{name: "banner matched", target: smtp, steps: []*netprobev1.Step{expect("^220 ")}, end: netprobev1.EndReason_END_REASON_MATCHED},
		{name: "a dialogue, then the reply to its end", target: smtp, steps: []*netprobev1.Step{expect("^220 "), send("EHLO probe\r\n"), expect("^250 "), send("QUIT\r\n")}, end: netprobev1.EndReason_END_REASON_EOF},
		{name: "no match before the peer closed", target: wrong, steps: []*netprobev1.Step{expect("^220 ")},
			want: &wantError{stage: netprobev1.Stage_STAGE_EXPECT, reason: netprobev1.Reason_REASON_NO_MATCH, address: addr(wrong)},
			end:  netprobev1.EndReason_END_REASON_ERROR, message: `no match for "^220 " before the peer closed; the last bytes received: "HTTP/1.0 400 Bad Request\r\n\r\n<html>not mail</html>"`},
		{name: "no match before the byte cap", target: flood, steps: []*netprobev1.Step{expect("^220 ")}, maxBytes: 100,
			want: &wantError{stage: netprobev1.Stage_STAGE_EXPECT, reason: netprobev1.Reason_REASON_NO_MATCH, address: addr(flood)},
			end:  netprobev1.EndReason_END_REASON_ERROR, message: `no match for "^220 " before the byte cap; the last bytes received: "` + strings.Repeat("x", 64) + `"`},
		{name: "the second expect times out", target: smtp, steps: []*netprobev1.Step{expect("^220 "), expect("^never")}, timeout: 300 * time.Millisecond,
			want: &wantError{stage: netprobev1.Stage_STAGE_EXPECT, reason: netprobev1.Reason_REASON_TIMEOUT, address: addr(smtp)},
			step: 1, end: netprobev1.EndReason_END_REASON_ERROR, message: `no match for "^never" before the timeout; the last bytes received: "mail ESMTP\r\n"`},
		{name: "a reset before a match", target: reset, steps: []*netprobev1.Step{send("HELO\r\n"), expect("^220 ")},
			want: &wantError{stage: netprobev1.Stage_STAGE_EXPECT, reason: netprobev1.Reason_REASON_RESET, errno: "ECONNRESET", address: addr(reset)},
			step: 1, end: netprobev1.EndReason_END_REASON_ERROR, message: `no match for "^220 " before the connection failed (...`},
		{name: "silence times out", target: silent, steps: []*netprobev1.Step{expect("^220 ")}, timeout: 300 * time.Millisecond,
			want: &wantError{stage: netprobev1.Stage_STAGE_EXPECT, reason: netprobev1.Reason_REASON_TIMEOUT, address: addr(silent)},
			end:  netprobev1.EndReason_END_REASON_ERROR, message: `no match for "^220 " before the timeout; the last bytes received: ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &netprobev1.FetchRequest{Target: tcpTarget(tt.target.Port()), Steps: tt.steps, MaxBytes: tt.maxBytes}
			if tt.timeout != 0 {
				req.Timeout = durationpb.New(tt.timeout)
			}
			f := fetch(t, e.Probe, req)
			checkError(t, f.summary.GetError(), tt.want)
			if f.summary.GetEndReason() != tt.end {
				t.Errorf("end %v, want %v", f.summary.GetEndReason(), tt.end)
			}
			if tt.want != nil && f.summary.GetError().GetStep() != tt.step {
				t.Errorf("step %d failed, want %d", f.summary.GetError().GetStep(), tt.step)
			}
			msg := f.summary.GetError().GetMessage()
			if before, after, ok := strings.Cut(tt.message, "..."); ok && len(msg) > len(tt.message) && strings.HasPrefix(msg, before) && strings.HasSuffix(msg, after) {
				msg = tt.message
			}
			if tt.message != "" && msg != tt.message {
				t.Errorf("message %q, want %q", msg, tt.message)
			}
		})
	}
	// The dialogue's sends reached the target.
	var heard []string
	for len(got) > 0 {
		heard = append(heard, <-got)
	}
	if !strings.Contains(strings.Join(heard, ""), "EHLO probe\r\nQUIT\r\n") {
		t.Errorf("the target heard %q", heard)
	}
}

// TestSendTemplate answers an IRC server's PING with the PONG it asks for:
// a send_template made of the previous expect's groups, named and
// numbered, and the matches reported as they happen.
func TestSendTemplate(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	heard := make(chan string, 1)
	irc := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		defer c.Close()
		c.Write([]byte("NOTICE hello\r\nPING :a1b2 now\r\n"))
		line, _ := bufio.NewReader(c).ReadString('\n')
		heard <- line
		if line == "PONG a1b2 now $\n" {
			c.Write([]byte(":irc 001 welcome\r\n"))
		}
	})
	f := fetch(t, e.Probe, &netprobev1.FetchRequest{
		Target: &netprobev1.Target{Host: "127.0.0.1", Port: irc.Port()},
		Steps: []*netprobev1.Step{
			expect(`^PING :(?P<token>\w+) (\w+)( missing)?`),
			{Action: &netprobev1.Step_SendTemplate{SendTemplate: "PONG ${token} $2$3 $$\n"}},
			expect(`^:\S+ 001`),
		},
	})
	if got := <-heard; got != "PONG a1b2 now $\n" {
		t.Errorf("the server heard %q", got)
	}
	if e := f.summary.GetError(); e != nil || f.summary.GetEndReason() != netprobev1.EndReason_END_REASON_MATCHED {
		t.Fatalf("summary %v, want the last expect matched", f.summary)
	}
	want := []*netprobev1.ExpectMatch{
		{Step: 0, Groups: [][]byte{[]byte("PING :a1b2 now"), []byte("a1b2"), []byte("now"), nil}},
		{Step: 2, Groups: [][]byte{[]byte(":irc 001")}},
	}
	if len(f.matches) != 2 || !proto.Equal(f.matches[0], want[0]) || !proto.Equal(f.matches[1], want[1]) {
		t.Errorf("matches %v, want %v", f.matches, want)
	}
	// Each match comes after the data it matched.
	if len(f.received) == 2 && (f.received[0] < len("NOTICE hello\r\nPING :a1b2 now") || f.received[1] != len(f.bytes())) {
		t.Errorf("the matches came after %v bytes of %d", f.received, len(f.bytes()))
	}
}

// TestExpectLine matches line by line, as blackbox_exporter does: a
// negated class stops at the line's end, the terminator is no part of the
// line, the lines before are passed over, and a last line without a
// terminator is tried when the peer closes.
func TestExpectLine(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("NOTICE hello\r\nPING :x42\r\nmore\r\nlogin: "))
		c.Close()
	})
	expectLine := func(re string) *netprobev1.Step {
		return &netprobev1.Step{Action: &netprobev1.Step_ExpectLine{ExpectLine: re}}
	}
	f := fetch(t, e.Probe, &netprobev1.FetchRequest{
		Target: &netprobev1.Target{Host: "127.0.0.1", Port: tg.Port()},
		Steps:  []*netprobev1.Step{expectLine(`PING :([^ ]+)$`), expectLine(`^login: $`)},
	})
	want := []*netprobev1.ExpectMatch{
		{Step: 0, Groups: [][]byte{[]byte("PING :x42"), []byte("x42")}},
		{Step: 1, Groups: [][]byte{[]byte("login: ")}},
	}
	if f.summary.GetError() != nil || len(f.matches) != 2 || !proto.Equal(f.matches[0], want[0]) || !proto.Equal(f.matches[1], want[1]) {
		t.Errorf("summary %v, matches %v; want %v", f.summary, f.matches, want)
	}
	// Over the whole reply, the same class runs on past the line.
	f = fetch(t, e.Probe, &netprobev1.FetchRequest{
		Target: &netprobev1.Target{Host: "127.0.0.1", Port: tg.Port()},
		Steps:  []*netprobev1.Step{expect(`PING :([^ ]+)`)},
	})
	if len(f.matches) != 1 || string(f.matches[0].GetGroups()[1]) != "x42\r\nmore\r\nlogin:" {
		t.Errorf("expect's matches %v", f.matches)
	}
}

// TestDialogueStartTLS runs a STARTTLS dialogue against a server made
// here: the handshake after the plaintext part, reported in the summary,
// and the rest of the dialogue over TLS.
func TestDialogueStartTLS(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	ca := probetest.NewCA(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "localhost", true)}}
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		fmt.Fprint(c, "220 ready\r\n")
		r := bufio.NewReader(c)
		if line, _ := r.ReadString('\n'); line != "STARTTLS\r\n" {
			c.Close()
			return
		}
		fmt.Fprint(c, "220 go ahead\r\n")
		tc := tls.Server(c, cfg)
		fmt.Fprint(tc, "250 secret\r\n")
		probetest.ReadAll(tc)
		tc.Close()
	})
	f := fetch(t, e.Probe, &netprobev1.FetchRequest{
		Target: tcpTarget(tg.Port()),
		Steps:  []*netprobev1.Step{expect("^220 "), send("STARTTLS\r\n"), expect("^220 "), startTLS(), expect("^250 secret")},
		Tls:    &netprobev1.TlsOptions{ServerName: "localhost", CaBundle: ca.PEM},
	})
	checkError(t, f.summary.GetError(), nil)
	if s := f.summary; s.GetEndReason() != netprobev1.EndReason_END_REASON_MATCHED || !s.GetTls().GetVerified() || s.GetTls().GetVersion() != "TLS 1.3" {
		t.Errorf("summary %v, want a verified TLS 1.3 and a match", s)
	}
	if got := string(f.bytes()); got != "220 ready\r\n220 go ahead\r\n250 secret\r\n" {
		t.Errorf("delivered %q", got)
	}
	if f.connect.GetTls() != nil {
		t.Error("the connect message reports a handshake that had not happened yet")
	}

	// A STARTTLS whose handshake fails is STAGE_TLS_HANDSHAKE at its step.
	f = fetch(t, e.Probe, &netprobev1.FetchRequest{
		Target: tcpTarget(tg.Port()),
		Steps:  []*netprobev1.Step{expect("^220 "), send("STARTTLS\r\n"), expect("^220 "), startTLS()},
		Tls:    &netprobev1.TlsOptions{ServerName: "localhost"},
	})
	checkError(t, f.summary.GetError(), &wantError{stage: netprobev1.Stage_STAGE_TLS_HANDSHAKE, reason: netprobev1.Reason_REASON_UNKNOWN_AUTHORITY, address: tg.Addr()})
	if f.summary.GetError().GetStep() != 3 {
		t.Errorf("step %d failed, want 3", f.summary.GetError().GetStep())
	}
}

// TestTLSReasons checks NOT_TLS (a peer that answers a handshake in the
// clear) and the version bounds.
func TestTLSReasons(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	plain := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
		c.Close()
	})
	resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: tcpTarget(plain.Port()), Tls: &netprobev1.TlsOptions{}})
	if err != nil {
		t.Fatal(err)
	}
	checkError(t, resp.GetError(), &wantError{stage: netprobev1.Stage_STAGE_TLS_HANDSHAKE, reason: netprobev1.Reason_REASON_NOT_TLS, address: plain.Addr()})

	ca := probetest.NewCA(t)
	only12 := tlsTarget(t, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "localhost", true)}, MaxVersion: tls.VersionTLS12})
	for _, tc := range []struct {
		min, max netprobev1.TlsVersion
		want     *wantError
		version  string
	}{
		{want: nil, version: "TLS 1.2"},
		{min: netprobev1.TlsVersion_TLS_VERSION_1_3, want: &wantError{stage: netprobev1.Stage_STAGE_TLS_HANDSHAKE, reason: netprobev1.Reason_REASON_PROTOCOL_VERSION, address: fmt.Sprintf("127.0.0.1:%d", only12)}},
		{max: netprobev1.TlsVersion_TLS_VERSION_1_2, want: nil, version: "TLS 1.2"},
	} {
		resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: tcpTarget(only12), Tls: &netprobev1.TlsOptions{
			ServerName: "localhost", CaBundle: ca.PEM, MinVersion: tc.min, MaxVersion: tc.max}})
		if err != nil {
			t.Fatal(err)
		}
		checkError(t, resp.GetError(), tc.want)
		if tc.want == nil && resp.GetTls().GetVersion() != tc.version {
			t.Errorf("min %v max %v: %s, want %s", tc.min, tc.max, resp.GetTls().GetVersion(), tc.version)
		}
	}
}

// TestTCPInfo checks the kernel's view of a connection: on loopback, a
// round-trip time and the segment sizes.
func TestTCPInfo(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	tg := probetest.Listen(t, "127.0.0.1:0", probetest.Echo)
	resp, err := e.Probe.Connect(probetest.Context(t), &netprobev1.ConnectRequest{Target: tcpTarget(tg.Port())})
	if err != nil {
		t.Fatal(err)
	}
	if ti := resp.GetTcpInfo(); ti.GetRtt().AsDuration() <= 0 || ti.GetSndMss() == 0 || ti.GetPathMtu() == 0 {
		t.Errorf("tcp_info %v, want an rtt and segment sizes", ti)
	}
	f := fetch(t, e.Probe, &netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Request: &netprobev1.FetchRequest_Payload{Payload: []byte("hello")}})
	if ti := f.summary.GetTcpInfo(); ti.GetBytesReceived() < 5 || ti.GetBytesAcked() < 5 {
		t.Errorf("the summary's tcp_info %v, want the bytes of the exchange counted", ti)
	}
}

// TestDialogueValidation refuses dialogues that cannot run, naming the
// field, before dialling anything.
func TestDialogueValidation(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	tg := probetest.Listen(t, "127.0.0.1:0", nil)
	many := make([]*netprobev1.Step, 65)
	for i := range many {
		many[i] = send("x")
	}
	udp := tcpTarget(tg.Port())
	udp.Network = netprobev1.Network_NETWORK_UDP
	for _, tc := range []struct {
		req    *netprobev1.FetchRequest
		fields []string
	}{
		{&netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Steps: []*netprobev1.Step{send("x")}, Request: &netprobev1.FetchRequest_Payload{Payload: []byte("y")}}, []string{"steps"}},
		{&netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Steps: []*netprobev1.Step{expect("(unclosed")}}, []string{"steps[0].expect"}},
		{&netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Steps: []*netprobev1.Step{expect(strings.Repeat("a", 1025))}}, []string{"steps[0].expect"}},
		{&netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Steps: []*netprobev1.Step{{Action: &netprobev1.Step_SendTemplate{SendTemplate: strings.Repeat("$1", 513)}}}}, []string{"steps[0].send_template"}},
		{&netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Steps: []*netprobev1.Step{{Action: &netprobev1.Step_StartTls{}}}}, []string{"steps[0].start_tls"}},
		{&netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Steps: []*netprobev1.Step{startTLS(), startTLS()}}, []string{"steps[1].start_tls"}},
		{&netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Steps: []*netprobev1.Step{{}}}, []string{"steps[0]"}},
		{&netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Steps: []*netprobev1.Step{send("x")}, Tls: &netprobev1.TlsOptions{}}, []string{"tls"}},
		{&netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Steps: many}, []string{"steps"}},
		{&netprobev1.FetchRequest{Target: udp, Steps: []*netprobev1.Step{send("x")}}, []string{"steps"}},
		{&netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Steps: []*netprobev1.Step{send(strings.Repeat("x", 1<<20+1))}}, []string{"steps"}},
		{&netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Tls: &netprobev1.TlsOptions{MinVersion: netprobev1.TlsVersion_TLS_VERSION_1_3, MaxVersion: netprobev1.TlsVersion_TLS_VERSION_1_2}}, []string{"tls.min_version"}},
	} {
		stream, err := e.Probe.Fetch(probetest.Context(t), tc.req)
		if err == nil {
			_, err = stream.Recv()
		}
		if got := badRequestFields(t, err); fmt.Sprint(got) != fmt.Sprint(tc.fields) {
			t.Errorf("fields %v, want %v (%v)", got, tc.fields, err)
		}
	}
	if !tg.AcceptedNothing() {
		t.Error("a refused dialogue dialled the target")
	}
}

// refusal returns the violations of a refused call, by field.
func refusal(t *testing.T, err error) map[string]string {
	t.Helper()
	out := map[string]string{}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("status = %v, want INVALID_ARGUMENT", err)
	}
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				out[v.Field] = v.Description
			}
		}
	}
	return out
}

// fetchErr starts a Fetch and returns how its stream ended.
func fetchErr(t *testing.T, probe netprobev1.ProbeServiceClient, req *netprobev1.FetchRequest) error {
	t.Helper()
	stream, err := probe.Fetch(probetest.Context(t), req)
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}

// classes is an expression of few instructions and many runes: \pL eight
// times, each its own range table, some 50 KiB of program (and little
// more in matching), so that some twenty of them, each told apart by its
// own number, pass the request's cap.
func classes(i int) string {
	return strings.Repeat(`\pL`, 8) + strconv.Itoa(i)
}

// TestExpectCostCaps plays the expects that cost too much compiled: one
// that compiles to megabytes from 990 bytes of source, a Fetch and a
// Sweep whose many expressions together pass the request's cap (a Sweep
// of 900 targets, each its own, is the one call that once killed
// probed), and the same expression in every step or target, which is
// compiled and counted once. Each refusal names the field and says the
// cost and the cap, and nothing is dialled.
func TestExpectCostCaps(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t, probetest.Unlimited)
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("Ünïcodes1\r\n"))
		c.Close()
	})
	// Refused requests are sent here, to show that they dial nothing.
	never := probetest.Listen(t, "127.0.0.1:0", nil)
	huge := strings.Repeat(`\pL{1000}`, 110)
	v := refusal(t, fetchErr(t, e.Probe, &netprobev1.FetchRequest{Target: tcpTarget(never.Port()), Steps: []*netprobev1.Step{send("x"), expect(huge)}}))
	if d := v["steps[1].expect"]; !regexp.MustCompile(`^costs \d+ bytes compiled .*, over the cap of 65536$`).MatchString(d) || len(v) != 1 {
		t.Errorf("an expression of 110,000 instructions: %v", v)
	}

	steps := make([]*netprobev1.Step, 64)
	for i := range steps {
		steps[i] = expect(classes(i))
	}
	v = refusal(t, fetchErr(t, e.Probe, &netprobev1.FetchRequest{Target: tcpTarget(never.Port()), Steps: steps}))
	if len(v) != 1 {
		t.Errorf("64 costly expressions: %v, want the one that passes the request's cap", v)
	}
	for field, d := range v {
		if !regexp.MustCompile(`^steps\[\d\d\]\.expect$`).MatchString(field) || !regexp.MustCompile(`^the request's distinct expressions take \d+ bytes compiled with this one, over the cap of 1048576 a request$`).MatchString(d) {
			t.Errorf("64 costly expressions: %s: %s", field, d)
		}
	}
	for i := range steps {
		steps[i] = expect(classes(1))
	}
	if f := fetch(t, e.Probe, &netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Steps: steps[:1]}); f.summary.GetEndReason() != netprobev1.EndReason_END_REASON_MATCHED {
		t.Errorf("a costly expression within the caps: %v", f.summary)
	}

	// 900 targets, each with its own costly expression: refused at the
	// one that passes the cap, and only there.
	req := &netprobev1.SweepRequest{}
	for i := range 900 {
		st := sweepTarget("127.0.0.1", never.Port())
		st.Steps = []*netprobev1.Step{expect(classes(i))}
		req.Targets = append(req.Targets, st)
	}
	_, err := sweep(probetest.Context(t), t, e.Probe, req)
	v = refusal(t, err)
	if len(v) != 1 {
		t.Errorf("900 costly targets: %d violations, want 1", len(v))
	}
	for field := range v {
		if !regexp.MustCompile(`^targets\[\d\d\]\.steps\[0\]\.expect$`).MatchString(field) {
			t.Errorf("900 costly targets: %s: %s", field, v[field])
		}
	}
	// The same expression in every target is one program.
	for _, st := range req.Targets[:100] {
		st.Target.Port, st.Steps[0] = tg.Port(), expect(classes(1))
	}
	req.Targets = req.Targets[:100]
	results, err := sweep(probetest.Context(t), t, e.Probe, req)
	if err != nil || len(results) != 100 {
		t.Fatalf("100 targets with the same expression: %d results, %v", len(results), err)
	}
	for _, r := range results {
		if r.GetSummary().GetEndReason() != netprobev1.EndReason_END_REASON_MATCHED {
			t.Errorf("target %d: %v", r.GetIndex(), r.GetSummary())
		}
	}
	if !never.AcceptedNothing() {
		t.Error("a refused request dialled its target")
	}
}

func sendTemplate(s string) *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_SendTemplate{SendTemplate: s}}
}

// TestSendTemplateCap plays send_templates that expand past the payload
// cap: each counts against it at the most it can send (1 KiB for each
// reference to a group), so 62 templates of ${1} 256 times over, once
// 3.9 MB sent past a 1 MiB cap, are refused before anything is dialled;
// templates that fit run, and what the target receives stays within the
// cap whatever it sends to be echoed.
func TestSendTemplateCap(t *testing.T) {
	t.Parallel()
	const payloadCap = 8 << 10
	e := probetest.Start(t, probetest.WithMaxPayload(payloadCap))
	never := probetest.Listen(t, "127.0.0.1:0", nil)
	steps := []*netprobev1.Step{expect(`(.*)`)}
	for range 62 {
		steps = append(steps, sendTemplate(strings.Repeat("${1}", 256)))
	}
	v := refusal(t, fetchErr(t, e.Probe, &netprobev1.FetchRequest{Target: tcpTarget(never.Port()), Steps: steps}))
	if d := v["steps"]; !strings.HasPrefix(d, "the sends add up to 16252928 bytes at the most (a send_template counts as its longest expansion") || len(v) != 1 {
		t.Errorf("62 templates of 256 references: %v", v)
	}

	// The target sends a line of 5,000 bytes, and counts what comes back.
	heard := make(chan int, 1)
	echo := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte(strings.Repeat("z", 5000) + "\n"))
		b, _ := probetest.ReadAll(c)
		c.Close()
		heard <- len(b)
	})
	// A send of 1,000 bytes and seven templates of one reference and a
	// newline, 1,025 bytes at the most each: 8,175, within the cap.
	steps = []*netprobev1.Step{send(strings.Repeat("s", 1000)), expect(`^(z+)$`)}
	for range 7 {
		steps = append(steps, sendTemplate("${1}\n"))
	}
	f := fetch(t, e.Probe, &netprobev1.FetchRequest{Target: tcpTarget(echo.Port()), Steps: steps})
	if got := <-heard; got != 1000+7*1025 || f.summary.GetBytesSent() != uint64(got) || got > payloadCap {
		t.Errorf("the target heard %d bytes, the summary says %d sent; want %d, within the cap of %d", got, f.summary.GetBytesSent(), 1000+7*1025, payloadCap)
	}
	// One more is over the cap.
	steps = append(steps, sendTemplate("${1}"))
	if v := refusal(t, fetchErr(t, e.Probe, &netprobev1.FetchRequest{Target: tcpTarget(never.Port()), Steps: steps})); len(v) != 1 || v["steps"] == "" {
		t.Errorf("templates over the cap by one reference: %v", v)
	}
	// References with no expect before, or to groups the expect lacks,
	// are nothing, and count as nothing.
	steps = []*netprobev1.Step{sendTemplate(strings.Repeat("${1}", 255) + "x"), expect(`^z`), sendTemplate(strings.Repeat("$1${name}", 100) + "y\n")}
	f = fetch(t, e.Probe, &netprobev1.FetchRequest{Target: tcpTarget(echo.Port()), Steps: steps})
	if got := <-heard; got != 3 || f.summary.GetError() != nil {
		t.Errorf("the target heard %d bytes, want 3: %v", got, f.summary)
	}
	if !never.AcceptedNothing() {
		t.Error("a refused request dialled its target")
	}
}

// TestExpectLongLine sends a line longer than expectWindow in two writes,
// the second once the first has all been received, so that the window
// drops the line's start: what is kept of it is no line's start to ^ and
// no line to an expect_line (a target whose only line says ERROR does not
// pass ^x+$), while an unanchored expect still finds its tail, and the
// next line is matched whole.
func TestExpectLongLine(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	head := "ERROR not ok " + strings.Repeat("x", 40000)
	tail := strings.Repeat("x", 40000) + "\n"
	for _, tc := range []struct {
		name  string
		after string // what follows the long line
		step  *netprobev1.Step
		match bool
	}{
		{"an expect anchored at a line's start", "", expect(`^x+$`), false},
		{"an expect anchored at the text's start", "", expect(`\Ax+`), false},
		{"an expect_line", "", &netprobev1.Step{Action: &netprobev1.Step_ExpectLine{ExpectLine: `^x+$`}}, false},
		{"an unanchored expect", "", expect(`xx\n`), true},
		{"an expect on the next line", "xx\n", expect(`^x+$`), true},
		{"an expect_line on the next line", "xx\n", &netprobev1.Step{Action: &netprobev1.Step_ExpectLine{ExpectLine: `^x+$`}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			received := make(chan struct{})
			tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
				c.Write([]byte(head))
				select {
				case <-received:
				case <-probetest.Context(t).Done():
				}
				c.Write([]byte(tail + tc.after))
				c.Close()
			})
			stream, err := e.Probe.Fetch(probetest.Context(t), &netprobev1.FetchRequest{
				Target: &netprobev1.Target{Host: "127.0.0.1", Port: tg.Port()},
				Steps:  []*netprobev1.Step{tc.step},
			})
			if err != nil {
				t.Fatal(err)
			}
			got, signalled := 0, false
			var summary *netprobev1.FetchSummary
			var matches int
			for {
				msg, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				switch ev := msg.Event.(type) {
				case *netprobev1.FetchResponse_Data:
					if got += len(ev.Data.GetData()); got >= len(head) && !signalled {
						signalled = true
						close(received)
					}
				case *netprobev1.FetchResponse_Match:
					matches++
				case *netprobev1.FetchResponse_Summary:
					summary = ev.Summary
				}
			}
			if tc.match {
				if matches != 1 || summary.GetError() != nil {
					t.Errorf("%d matches, error %v; want a match", matches, summary.GetError())
				}
				return
			}
			if pe := summary.GetError(); matches != 0 || pe.GetStage() != netprobev1.Stage_STAGE_EXPECT || pe.GetReason() != netprobev1.Reason_REASON_NO_MATCH {
				t.Errorf("%d matches, error %v; want EXPECT/NO_MATCH", matches, pe)
			}
		})
	}
}
