package service_test

import (
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// codeRefusal is the STARTTLS dialogues' refusal of SMTP and FTP: a whole
// reply line of a 4xx or 5xx code.
const codeRefusal = `^[45]\d\d [^\n]*\n`

func refusing(st *netprobev1.Step, refusal string) *netprobev1.Step {
	st.Refusal = refusal
	return st
}

func expectLine(re string) *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_ExpectLine{ExpectLine: re}}
}

// holding is a target that sends each of writes in turn, a write each,
// gap apart, and then holds the connection until the probe leaves: a
// probe that waited for its expect would end at its timeout.
func holding(t *testing.T, gap time.Duration, writes ...string) *probetest.Target {
	return probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		for i, w := range writes {
			if i > 0 && gap > 0 {
				// The peer's pace, as a slow or hostile one sends.
				time.Sleep(gap)
			}
			if _, err := c.Write([]byte(w)); err != nil {
				return
			}
		}
		probetest.ReadAll(c)
	})
}

// TestRefusal runs expects with refusals against targets that refuse, go
// ahead, or both, and then hold the connection open, with a timeout
// longer than the test's: a refusal fails its step at once (EXPECT /
// NO_MATCH, the step named, the message quoting it), what the expect
// matches first goes on, and a reply that is not yet a refusal is waited
// on as ever.
func TestRefusal(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	banner := strings.Repeat("220-a line of a long banner\r\n", 4000)
	tests := []struct {
		name    string
		writes  []string
		steps   []*netprobev1.Step
		timeout time.Duration
		// close makes the target close after its writes; gap is the
		// time between them.
		close bool
		gap   time.Duration
		// want is the error's reason (none: the expect matched), step
		// its step, message its message.
		want    netprobev1.Reason
		step    uint32
		message string
	}{
		{name: "refused at once", writes: []string{"454 4.7.0 TLS not available\r\n"},
			steps: []*netprobev1.Step{refusing(expect(`^220 `), codeRefusal)},
			want:  netprobev1.Reason_REASON_NO_MATCH, message: `no match for "^220 ": the target refused with "454 4.7.0 TLS not available\r\n"`},
		{name: "refused at the third step", writes: []string{"220 mail.test\r\n", "454 no\r\n"},
			steps: []*netprobev1.Step{refusing(expect(`^220 `), codeRefusal), send("STARTTLS\r\n"), refusing(expect(`^220 `), codeRefusal)},
			want:  netprobev1.Reason_REASON_NO_MATCH, step: 2, message: `no match for "^220 ": the target refused with "454 no\r\n"`},
		{name: "the go-ahead, then a refusal, in one write", writes: []string{"220 mail.test\r\n554 changed my mind\r\n"},
			steps: []*netprobev1.Step{refusing(expect(`^220 `), codeRefusal)}},
		{name: "a refusal, then the go-ahead, in one write", writes: []string{"554 no\r\n220 yes\r\n"},
			steps: []*netprobev1.Step{refusing(expect(`^220 `), codeRefusal)},
			want:  netprobev1.Reason_REASON_NO_MATCH, message: `no match for "^220 ": the target refused with "554 no\r\n"`},
		{name: "the go-ahead and a refusal at the same place: the go-ahead", writes: []string{"a001 OK or NO\r\n"},
			steps: []*netprobev1.Step{refusing(expect(`^a001 OK`), `^a001`)}},
		{name: "a reply of two lines in three writes", writes: []string{"502-5.5.1 Unrecognized command.\r\n502 5.5", ".1", " Try HELP.\r\n"},
			steps: []*netprobev1.Step{refusing(expect(`^220 `), codeRefusal)},
			want:  netprobev1.Reason_REASON_NO_MATCH, message: `no match for "^220 ": the target refused with "502 5.5.1 Try HELP.\r\n"`},
		// The refusal comes apart from the banner, so that it is read
		// once what is pending has passed the window that an expect keeps,
		// and the oldest half is dropped.
		{name: "a refusal after 116 KB of banner, past what an expect keeps", writes: []string{banner, "554 go away\r\n"}, gap: 20 * time.Millisecond,
			steps: []*netprobev1.Step{refusing(expect(`^220 `), codeRefusal)},
			want:  netprobev1.Reason_REASON_NO_MATCH, message: `no match for "^220 ": the target refused with "554 go away\r\n"`},
		{name: "a refusal that closes", writes: []string{"421 too busy\r\n"}, close: true,
			steps: []*netprobev1.Step{refusing(expect(`^220 `), codeRefusal)},
			want:  netprobev1.Reason_REASON_NO_MATCH, message: `no match for "^220 ": the target refused with "421 too busy\r\n"`},
		{name: "a long refusal is quoted to 128 bytes", writes: []string{"554 x" + strings.Repeat("é", 100) + "\r\n"},
			steps: []*netprobev1.Step{refusing(expect(`^220 `), codeRefusal)},
			want:  netprobev1.Reason_REASON_NO_MATCH, message: `no match for "^220 ": the target refused with "554 x` + strings.Repeat("é", 61) + `\xc3"`},
		{name: "a binary refusal", writes: []string{"N"},
			steps: []*netprobev1.Step{send("\x00\x00\x00\x08\x04\xd2\x16\x2f"), refusing(expect(`^S`), `^N`)},
			want:  netprobev1.Reason_REASON_NO_MATCH, step: 1, message: `no match for "^S": the target refused with "N"`},
		{name: "expect_line: the line refused, quoted without its terminator", writes: []string{"* OK ready\r\n", "a001 NO STARTTLS not available\r\n"},
			steps: []*netprobev1.Step{refusing(expectLine(`^a001 OK`), `^a001 (?:NO|BAD)`)},
			want:  netprobev1.Reason_REASON_NO_MATCH, message: `no match for "^a001 OK": the target refused with "a001 NO STARTTLS not available"`},
		{name: "expect_line: a line both match goes ahead", writes: []string{"a001 OK or NO\r\n"},
			steps: []*netprobev1.Step{refusing(expectLine(`^a001 OK`), `NO`)}},
		{name: "expect_line: a refusal after the go-ahead is not looked for", writes: []string{"a001 OK\r\na001 NO\r\n"},
			steps: []*netprobev1.Step{refusing(expectLine(`^a001 OK`), `NO`)}},
		// The peer dribbles what is all but a refusal, a write a byte:
		// never its line's end, so the step waits for its timeout.
		{name: "almost a refusal, a byte at a time", writes: strings.Split("454 4.7.0 TLS not available", ""), gap: time.Millisecond, timeout: 500 * time.Millisecond,
			steps: []*netprobev1.Step{refusing(expect(`^220 `), codeRefusal)},
			want:  netprobev1.Reason_REASON_TIMEOUT, message: `no match for "^220 " before the timeout; the last bytes received: "454 4.7.0 TLS not available"`},
		{name: "expect_line: almost a refusal, a byte at a time", writes: strings.Split("a001 NO STARTTLS", ""), gap: time.Millisecond, timeout: 500 * time.Millisecond,
			steps: []*netprobev1.Step{refusing(expectLine(`^a001 OK`), `^a001 NO.*$`)},
			want:  netprobev1.Reason_REASON_TIMEOUT, message: `no match for "^a001 OK" before the timeout; the last bytes received: "a001 NO STARTTLS"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var tg *probetest.Target
			if tt.close {
				tg = probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
					c.Write([]byte(strings.Join(tt.writes, "")))
					c.Close()
				})
			} else {
				tg = holding(t, tt.gap, tt.writes...)
			}
			// Longer than the test may take: a step that waits for it
			// fails the test.
			timeout := time.Minute
			if tt.timeout != 0 {
				timeout = tt.timeout
			}
			f := fetch(t, e.Probe, &netprobev1.FetchRequest{Target: tcpTarget(tg.Port()), Steps: tt.steps, Timeout: durationpb.New(timeout)})
			pe := f.summary.GetError()
			if tt.want == netprobev1.Reason_REASON_UNSPECIFIED {
				if pe != nil || f.summary.GetEndReason() != netprobev1.EndReason_END_REASON_MATCHED {
					t.Errorf("summary %v, want the expect matched", f.summary)
				}
				return
			}
			checkError(t, pe, &wantError{stage: netprobev1.Stage_STAGE_EXPECT, reason: tt.want, address: tg.Addr()})
			if pe.GetStep() != tt.step || pe.GetMessage() != tt.message {
				t.Errorf("step %d, message %q; want step %d, %q", pe.GetStep(), pe.GetMessage(), tt.step, tt.message)
			}
			if got, want := string(f.bytes()), strings.Join(tt.writes, ""); got != want {
				t.Errorf("delivered %d bytes, want the %d sent", len(got), len(want))
			}
		})
	}
}

// TestRefusalSweep runs a Sweep whose targets' steps refuse, go ahead and
// refuse at a later step: each probe ends as a Fetch would, at once.
func TestRefusalSweep(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t)
	refuser := holding(t, 0, "220 mail.test\r\n", "454 TLS not available\r\n")
	greeter := holding(t, 0, "220 mail.test\r\n", "220 go ahead\r\n")
	req := &netprobev1.SweepRequest{Timeout: durationpb.New(time.Minute)}
	for _, tg := range []*probetest.Target{refuser, greeter, refuser} {
		st := sweepTarget("127.0.0.1", tg.Port())
		st.Steps = []*netprobev1.Step{refusing(expect(`^220 `), codeRefusal), send("STARTTLS\r\n"), refusing(expect(`^220 `), codeRefusal)}
		req.Targets = append(req.Targets, st)
	}
	results, err := sweep(probetest.Context(t), t, e.Probe, req)
	if err != nil || len(results) != 3 {
		t.Fatalf("Sweep: %d results, %v", len(results), err)
	}
	for _, r := range results {
		pe := r.GetSummary().GetError()
		if r.GetIndex() == 1 {
			if pe != nil || r.GetSummary().GetEndReason() != netprobev1.EndReason_END_REASON_MATCHED {
				t.Errorf("target 1: %v, want matched", r.GetSummary())
			}
			continue
		}
		checkError(t, pe, &wantError{stage: netprobev1.Stage_STAGE_EXPECT, reason: netprobev1.Reason_REASON_NO_MATCH, address: refuser.Addr()})
		if want := `no match for "^220 ": the target refused with "454 TLS not available\r\n"`; pe.GetStep() != 2 || pe.GetMessage() != want {
			t.Errorf("target %d: step %d, message %q; want step 2, %q", r.GetIndex(), pe.GetStep(), pe.GetMessage(), want)
		}
	}
}

// TestRefusalValidation plays refusals the service must not run: on a
// step that waits for nothing, unparsable, too long, too costly alone or
// with the step's expect, and many that together pass the request's cap
// of programs, in a Fetch and across a Sweep's targets. Each is
// INVALID_ARGUMENT naming the step's refusal, and nothing is dialled.
func TestRefusalValidation(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t, probetest.Unlimited)
	never := probetest.Listen(t, "127.0.0.1:0", nil)
	manyRefusals := make([]*netprobev1.Step, 64)
	for i := range manyRefusals {
		manyRefusals[i] = refusing(expect(`^220 `), classes(i))
	}
	const (
		notOnStep   = `^only an expect or expect_line step has a refusal$`
		overCost    = `^costs \d+ bytes compiled .*, over the cap of 65536$`
		overStep    = `^costs \d+ bytes compiled with the step's expect .*, over the cap of 65536 a step$`
		overRequest = `^the request's distinct expressions take \d+ bytes compiled with this one, over the cap of 1048576 a request$`
	)
	for _, tc := range []struct {
		name  string
		steps []*netprobev1.Step
		// field and description match the one violation.
		field, description string
	}{
		{"on a send", []*netprobev1.Step{refusing(send("EHLO x\r\n"), codeRefusal)}, `^steps\[0\]\.refusal$`, notOnStep},
		{"on a send_template", []*netprobev1.Step{expect(`^220 `), refusing(sendTemplate("$1"), codeRefusal)}, `^steps\[1\]\.refusal$`, notOnStep},
		{"on a start_tls", []*netprobev1.Step{expect(`^220 `), refusing(startTLS(), codeRefusal)}, `^steps\[1\]\.refusal$`, notOnStep},
		{"unparsable", []*netprobev1.Step{refusing(expect(`^220 `), `(unclosed`)}, `^steps\[0\]\.refusal$`, `^not an RE2 regular expression: `},
		{"1,025 bytes", []*netprobev1.Step{refusing(expect(`^220 `), strings.Repeat("a", 1025))}, `^steps\[0\]\.refusal$`, `^1025 bytes is over the cap of 1024$`},
		{"110,000 instructions", []*netprobev1.Step{refusing(expect(`^220 `), strings.Repeat(`\pL{1000}`, 110))}, `^steps\[0\]\.refusal$`, overCost},
		{"within the cap alone, not with the expect", []*netprobev1.Step{refusing(expect(classes(0)), classes(1))}, `^steps\[0\]\.refusal$`, overStep},
		{"64 costly refusals", manyRefusals, `^steps\[\d\d\]\.refusal$`, overRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := refusal(t, fetchErr(t, e.Probe, &netprobev1.FetchRequest{Target: tcpTarget(never.Port()), Steps: tc.steps}))
			if len(v) != 1 {
				t.Fatalf("violations %v, want one", v)
			}
			for field, d := range v {
				if !regexp.MustCompile(tc.field).MatchString(field) || !regexp.MustCompile(tc.description).MatchString(d) {
					t.Errorf("%s: %s; want %s: %s", field, d, tc.field, tc.description)
				}
			}
		})
	}
	t.Run("a Sweep of 900 targets, each a refusal of its own", func(t *testing.T) {
		req := &netprobev1.SweepRequest{}
		for i := range 900 {
			st := sweepTarget("127.0.0.1", never.Port())
			st.Steps = []*netprobev1.Step{refusing(expect(`^220 `), classes(i))}
			req.Targets = append(req.Targets, st)
		}
		_, err := sweep(probetest.Context(t), t, e.Probe, req)
		v := refusal(t, err)
		if len(v) != 1 {
			t.Fatalf("violations %v, want one", v)
		}
		for field, d := range v {
			if !regexp.MustCompile(`^targets\[\d\d\]\.steps\[0\]\.refusal$`).MatchString(field) || !regexp.MustCompile(overRequest).MatchString(d) {
				t.Errorf("%s: %s", field, d)
			}
		}
	})
	if !never.AcceptedNothing() {
		t.Error("a refused request dialled its target")
	}
}
