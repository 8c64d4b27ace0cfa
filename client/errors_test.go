package client

import (
	"strings"
	"testing"
	"unicode"
)

// TestProbeErrorPrintable holds a probe error's text, made of the server's
// words, to what a terminal prints: a hostile server's escape sequences in
// the address or the message come out as U+FFFD.
func TestProbeErrorPrintable(t *testing.T) {
	const hostile = "\x1b]0;PWNED\a\x1b[2J\x1b[31mRED\n"
	for _, e := range []*ProbeError{
		{Stage: StageConnect, Reason: ReasonTimeout, Address: "A" + hostile, Step: -1},
		{Stage: StageSocket, Message: "M" + hostile, Step: -1},
		{Stage: StageExpect, Message: "E" + hostile, Step: 0},
	} {
		text := e.Error()
		if i := strings.IndexFunc(text, func(r rune) bool { return !unicode.IsPrint(r) }); i >= 0 {
			t.Errorf("%q holds %q, which a terminal acts on", text, text[i])
		}
		if !strings.Contains(text, "\uFFFD]0;PWNED") {
			t.Errorf("%q: the hostile text is not there, made printable", text)
		}
	}
}
