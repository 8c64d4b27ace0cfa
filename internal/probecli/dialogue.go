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

// clientStep is a starttls step as the client has it.
func clientStep(st *netprobev1.Step) client.Step {
	switch a := st.GetAction().(type) {
	case *netprobev1.Step_Send:
		return client.Step{Send: a.Send}
	case *netprobev1.Step_Expect:
		return client.Step{Expect: a.Expect, Refusal: st.GetRefusal()}
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
