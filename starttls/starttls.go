// Package starttls has the dialogues that bring the protocols which start
// in the clear to their TLS handshake (SMTP, IMAP, POP3, FTP, PostgreSQL,
// LDAP): the steps of a Fetch, up to and including its start_tls. The CLI
// (probe fetch and probe sweep --starttls NAME) and the probe server's
// modules share them.
//
// Each expect step carries, as its refusal, the replies by which a server
// refuses there (SMTP's 454, IMAP's NO, POP3's -ERR, ...): the service
// fails the step at once on one, where the expect alone would wait for its
// go-ahead until the peer closes or the timeout.
package starttls

import (
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
}

func send(b string) *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_Send{Send: []byte(b)}}
}

// expect waits for re, and fails on refusal: a complete reply by which
// the server refuses there. A text protocol's reply ends with its line's
// \n, so a refusal matches whole lines.
func expect(re, refusal string) *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_Expect{Expect: re}, Refusal: refusal}
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
		expect(`^220 `, codeRefusal), send("EHLO netprobe\r\n"), expect(`^250 `, codeRefusal), send("STARTTLS\r\n"), expect(`^220 `, codeRefusal), startTLS,
	}},
	// A greeting of BYE turns the client away; a tagged NO or BAD refuses
	// STARTTLS.
	{Name: "imap", Service: "imap", Steps: []*netprobev1.Step{
		expect(`^\* OK`, `^\* BYE[^\n]*\n`), send("a001 STARTTLS\r\n"), expect(`^a001 OK`, `^(?:a001 (?:NO|BAD)|\* BYE)[^\n]*\n`), startTLS,
	}},
	{Name: "pop3", Service: "pop3", Steps: []*netprobev1.Step{
		expect(`^\+OK`, `^-ERR[^\n]*\n`), send("STLS\r\n"), expect(`^\+OK`, `^-ERR[^\n]*\n`), startTLS,
	}},
	{Name: "ftp", Service: "ftp", Steps: []*netprobev1.Step{
		expect(`^220 `, codeRefusal), send("AUTH TLS\r\n"), expect(`^234 `, codeRefusal), startTLS,
	}},
	// An SSLRequest (length 8, code 80877103), answered with one byte: S
	// to go on with TLS, N for a server without it.
	{Name: "postgres", Service: "postgresql", Steps: []*netprobev1.Step{
		send("\x00\x00\x00\x08\x04\xd2\x16\x2f"), expect(`^S`, `^N`), startTLS,
	}},
	// The ExtendedResponse (application tag 24) with resultCode 0,
	// success; another resultCode (a short one, as they all are but
	// extensions') refuses, and so does a Notice of Disconnection, which is
	// an ExtendedResponse too.
	{Name: "ldap", Service: "ldap", Steps: []*netprobev1.Step{
		send(ldapStartTLS), expect(`\x78[\x00-\x7f]\x0a\x01\x00`, `\x78[\x00-\x7f]\x0a\x01[\x01-\x7f]`), startTLS,
	}},
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
	return d, true
}

// Names lists the known protocols.
func Names() []string {
	out := make([]string, len(dialogues))
	for i, d := range dialogues {
		out[i] = d.Name
	}
	return out
}
