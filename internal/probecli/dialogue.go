package probecli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/netprobe/netprobe/client"
	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/starttls"
)

// dialogueFlags are fetch's dialogue: --starttls, then --send and
// --expect in the order given.
type dialogueFlags struct {
	starttls string
	ordered  []client.Step
}

func (d *dialogueFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&d.starttls, "starttls", "", "start TLS the way this protocol does, before any --send and --expect: "+strings.Join(starttls.Names(), ", "))
	f.Var(&stepFlag{steps: &d.ordered, send: true}, "send", `send these bytes (\r, \n, \xNN escapes as in Go); repeatable, in order with --expect`)
	f.Var(&stepFlag{steps: &d.ordered}, "expect", "wait for what matches this RE2 regular expression, line by line (^ and $ at line boundaries); repeatable, in order with --send")
}

// steps is the dialogue, or nil for none.
func (d *dialogueFlags) steps() ([]client.Step, error) {
	var out []client.Step
	if d.starttls != "" {
		dl, ok := starttls.Lookup(d.starttls)
		if !ok {
			return nil, usagef("--starttls %q: want one of %s", d.starttls, strings.Join(starttls.Names(), ", "))
		}
		for _, st := range dl.Steps {
			out = append(out, clientStep(st))
		}
	}
	return append(out, d.ordered...), nil
}

// quotedRefusal bounds how much of a refusal the error quotes.
const quotedRefusal = 128

// watchedFetch reads a Fetch whose dialogue starts with --starttls's,
// and watches its replies for one by which the target refuses (SMTP's 454,
// IMAP's NO, POP3's -ERR, PostgreSQL's N, ...). The service's expect would
// wait for its go-ahead until the target closes or --timeout, since a
// dialogue's steps cannot fail on another reply; the CLI reads the same
// bytes, and ends the fetch at once, failed as the expect would have
// (stage EXPECT, reason NO_MATCH), quoting the refusal. Without
// --starttls it is the Fetch as it is.
type watchedFetch struct {
	*client.Fetch
	dialogue starttls.Dialogue
	watch    *starttls.Watch
	// matched counts the Fetch's matches the watch has been told of.
	matched int
	// err is the refusal, returned by the Next after the one that
	// delivered it.
	err error
}

// watch wraps f, watching it when the dialogue is a --starttls one.
func (d *dialogueFlags) watch(f *client.Fetch) *watchedFetch {
	w := &watchedFetch{Fetch: f}
	if dl, ok := starttls.Lookup(d.starttls); ok {
		w.dialogue, w.watch = dl, dl.Watch()
	}
	return w
}

// Next is the Fetch's Next, but for a refusal, which it returns as the
// failure after the bytes that hold it, abandoning the Fetch.
func (w *watchedFetch) Next() ([]byte, error) {
	if w.err != nil {
		w.Close()
		return nil, w.err
	}
	b, err := w.Fetch.Next()
	if err != nil || w.watch == nil {
		return b, err
	}
	// A match comes after the bytes it matched, before those that follow.
	for _, m := range w.Matches()[w.matched:] {
		w.watch.Matched(m.Step)
	}
	w.matched = len(w.Matches())
	if step, reply, refused := w.watch.Received(b); refused {
		w.err = &client.ProbeError{
			Stage:   client.StageExpect,
			Reason:  client.ReasonNoMatch,
			Address: w.Connect.RemoteAddr.String(),
			Message: fmt.Sprintf("no match for %q: the target refused with %q", w.dialogue.Steps[step].GetExpect(), reply[:min(len(reply), quotedRefusal)]),
			Step:    step,
			Connect: w.Connect,
		}
		w.watch = nil
	}
	return b, nil
}

// clientStep is a starttls step as the client has it.
func clientStep(st *netprobev1.Step) client.Step {
	switch a := st.GetAction().(type) {
	case *netprobev1.Step_Send:
		return client.Step{Send: a.Send}
	case *netprobev1.Step_Expect:
		return client.Step{Expect: a.Expect}
	}
	return client.StartTLS()
}

// stepFlag is --send or --expect: each use appends a step to the one
// list both share, so that their order is the command line's.
type stepFlag struct {
	steps *[]client.Step
	send  bool
}

var _ pflag.Value = (*stepFlag)(nil)

func (f *stepFlag) Set(s string) error {
	if !f.send {
		*f.steps = append(*f.steps, client.Expect(s))
		return nil
	}
	b, err := strconv.Unquote(`"` + strings.ReplaceAll(s, `"`, `\"`) + `"`)
	if err != nil {
		return fmt.Errorf("%q: a bad escape (\\r, \\n, \\t, \\\\, \\xNN are the ones)", s)
	}
	*f.steps = append(*f.steps, client.Send(b))
	return nil
}

func (f *stepFlag) String() string { return "" }
func (f *stepFlag) Type() string   { return "text" }
