// Package starttls has the dialogues that bring the protocols which start
// in the clear to their TLS handshake (SMTP, IMAP, POP3, FTP, PostgreSQL,
// LDAP): the steps of a Fetch, up to and including its start_tls. The CLI
// (probe fetch --starttls NAME) and the probe server's modules share them.
//
// Each dialogue also knows the replies by which a server refuses (SMTP's
// 454, IMAP's NO, POP3's -ERR, ...). A Fetch's expect waits for its match
// until the peer closes or the timeout, and the steps have no way to fail
// on another reply; a client that reads the dialogue's bytes as they come
// can, with a Watch.
package starttls

import (
	"bytes"
	"maps"
	"regexp"
	"slices"

	"google.golang.org/protobuf/proto"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// Dialogue is one protocol's way to TLS.
type Dialogue struct {
	// Name is the protocol's name, as --starttls takes it.
	Name string
	// Service is the service name of its usual port.
	Service string
	// Steps lead to the handshake; the last is a start_tls.
	Steps []*netprobev1.Step
	// Refusals are, by the index of an expect step, the complete replies
	// by which a server refuses there, instead of the one the expect
	// waits for: RE2 expressions matched as expects are (^ and $ at line
	// boundaries), against what came since the previous expect matched.
	// A text protocol's end with a line's \n: a refusal is whole lines.
	Refusals map[int]string

	// binary says the replies are not lines of text (PostgreSQL, LDAP):
	// short, and watched whole.
	binary bool
}

func send(b string) *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_Send{Send: []byte(b)}}
}

func expect(re string) *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_Expect{Expect: re}}
}

var startTLS = &netprobev1.Step{Action: &netprobev1.Step_StartTls{StartTls: true}}

// ldapStartTLS is an LDAP ExtendedRequest for StartTLS
// (1.3.6.1.4.1.1466.20037, RFC 4511), message 1.
const ldapStartTLS = "\x30\x1d\x02\x01\x01\x77\x18\x80\x16" + "1.3.6.1.4.1.1466.20037"

// A complete reply line of a 4xx or 5xx code, the last of a multi-line
// one: SMTP's and FTP's refusals (421 at the greeting, 454 or 502 to
// STARTTLS, 530 or 534 to AUTH TLS, ...).
const codeRefusal = `^[45]\d\d [^\n]*\n`

// dialogues are the known protocols, by name.
var dialogues = []Dialogue{
	{Name: "smtp", Service: "smtp", Steps: []*netprobev1.Step{
		expect(`^220 `), send("EHLO netprobe\r\n"), expect(`^250 `), send("STARTTLS\r\n"), expect(`^220 `), startTLS,
	}, Refusals: map[int]string{0: codeRefusal, 2: codeRefusal, 4: codeRefusal}},
	// A greeting of BYE turns the client away; a tagged NO or BAD refuses
	// STARTTLS.
	{Name: "imap", Service: "imap", Steps: []*netprobev1.Step{
		expect(`^\* OK`), send("a001 STARTTLS\r\n"), expect(`^a001 OK`), startTLS,
	}, Refusals: map[int]string{0: `^\* BYE[^\n]*\n`, 2: `^(?:a001 (?:NO|BAD)|\* BYE)[^\n]*\n`}},
	{Name: "pop3", Service: "pop3", Steps: []*netprobev1.Step{
		expect(`^\+OK`), send("STLS\r\n"), expect(`^\+OK`), startTLS,
	}, Refusals: map[int]string{0: `^-ERR[^\n]*\n`, 2: `^-ERR[^\n]*\n`}},
	{Name: "ftp", Service: "ftp", Steps: []*netprobev1.Step{
		expect(`^220 `), send("AUTH TLS\r\n"), expect(`^234 `), startTLS,
	}, Refusals: map[int]string{0: codeRefusal, 2: codeRefusal}},
	// An SSLRequest (length 8, code 80877103), answered with one byte: S
	// to go on with TLS, N for a server without it.
	{Name: "postgres", Service: "postgresql", Steps: []*netprobev1.Step{
		send("\x00\x00\x00\x08\x04\xd2\x16\x2f"), expect(`^S`), startTLS,
	}, Refusals: map[int]string{1: `^N`}, binary: true},
	// The ExtendedResponse (application tag 24) with resultCode 0,
	// success; another resultCode (a short one, as they all are but
	// extensions') refuses, and so does a Notice of Disconnection, which is
	// an ExtendedResponse too.
	{Name: "ldap", Service: "ldap", Steps: []*netprobev1.Step{
		send(ldapStartTLS), expect(`\x78[\x00-\x7f]\x0a\x01\x00`), startTLS,
	}, Refusals: map[int]string{1: `\x78[\x00-\x7f]\x0a\x01[\x01-\x7f]`}, binary: true},
}

// Lookup returns the dialogue of the protocol called name.
func Lookup(name string) (Dialogue, bool) {
	i := slices.IndexFunc(dialogues, func(d Dialogue) bool { return d.Name == name })
	if i < 0 {
		return Dialogue{}, false
	}
	d := dialogues[i]
	d.Steps = make([]*netprobev1.Step, len(dialogues[i].Steps))
	for j, st := range dialogues[i].Steps {
		d.Steps[j] = proto.CloneOf(st)
	}
	d.Refusals = maps.Clone(dialogues[i].Refusals)
	return d, true
}

// What a Watch keeps for an expect: more than any greeting or capability
// list before a STARTTLS, and for a binary protocol more than the reply
// before its result code. Past it the Watch stops, and the expect's own
// limits (the byte cap, the timeout) apply.
const (
	watchWindow       = 16 << 10
	watchWindowBinary = 256
)

// Watch follows a dialogue's replies as a client of the Fetch receives
// them, to tell a refusal at once: the service's expect would wait for
// the go-ahead until the peer closes or the timeout.
type Watch struct {
	// expects and refusals are the dialogue's, compiled, by step.
	expects, refusals map[int]*regexp.Regexp
	// window is what it keeps; lines says the replies are lines of text.
	window int
	lines  bool
	// steps is the dialogue's length, start_tls included.
	steps int
	// step is the expect step waiting for its match, or -1 once the
	// dialogue is past its expects.
	step int
	// pending is what came since the previous expect matched: what the
	// service matches the waiting expect against; line is where its last
	// line, not ended yet, starts.
	pending []byte
	line    int
}

// Watch starts watching a Fetch whose steps begin with d's.
func (d Dialogue) Watch() *Watch {
	w := &Watch{expects: map[int]*regexp.Regexp{}, refusals: map[int]*regexp.Regexp{}, steps: len(d.Steps), step: -1, window: watchWindow, lines: !d.binary}
	if d.binary {
		w.window = watchWindowBinary
	}
	for i, st := range d.Steps {
		if e, ok := st.GetAction().(*netprobev1.Step_Expect); ok {
			w.expects[i] = regexp.MustCompile("(?m)" + e.Expect)
		}
	}
	for i, re := range d.Refusals {
		w.refusals[i] = regexp.MustCompile("(?m)" + re)
	}
	w.step = w.next(0)
	return w
}

// next is the first expect step from i on, before the start_tls; -1 for
// none.
func (w *Watch) next(i int) int {
	for ; i < w.steps; i++ {
		if w.expects[i] != nil {
			return i
		}
	}
	return -1
}

// Matched tells w that the expect of step i matched, as the service's
// ExpectMatch says, after the bytes it matched were Received. What
// follows the match stays pending for the next expect, as in the service.
func (w *Watch) Matched(i int) {
	if i != w.step {
		return
	}
	if loc := w.expects[i].FindIndex(w.pending); loc != nil {
		w.pending = w.pending[loc[1]:]
	} else {
		w.pending = nil
	}
	w.line = bytes.LastIndexByte(w.pending, '\n') + 1
	w.step = w.next(i + 1)
}

// Received adds b, bytes the target sent, in order. When they complete a
// reply by which the target refuses at the step waiting, before anything
// the step's expect matches, it returns that step and the reply.
//
// A text protocol's bytes are matched once each: only when b ends a line
// (a refusal is whole lines), and from the start of the line b goes on,
// the lines before it having been matched when they ended (a go-ahead
// there was matched by the service, whose match came before b).
func (w *Watch) Received(b []byte) (step int, reply []byte, refused bool) {
	if w.step < 0 {
		return 0, nil, false
	}
	if len(w.pending)+len(b) > w.window {
		w.step, w.pending = -1, nil
		return 0, nil, false
	}
	from := w.line
	w.pending = append(w.pending, b...)
	end := bytes.LastIndexByte(b, '\n')
	if end >= 0 {
		w.line = len(w.pending) - len(b) + end + 1
	}
	re := w.refusals[w.step]
	if re == nil || w.lines && end < 0 {
		return 0, nil, false
	}
	if !w.lines {
		from = 0
	}
	text := w.pending[from:]
	loc := re.FindIndex(text)
	if loc == nil {
		return 0, nil, false
	}
	// The go-ahead first: the service's match is on its way.
	if ok := w.expects[w.step].FindIndex(text); ok != nil && ok[0] <= loc[0] {
		return 0, nil, false
	}
	return w.step, text[loc[0]:loc[1]], true
}

// Names lists the known protocols.
func Names() []string {
	out := make([]string, len(dialogues))
	for i, d := range dialogues {
		out[i] = d.Name
	}
	return out
}
