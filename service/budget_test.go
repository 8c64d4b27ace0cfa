package service_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/admission"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/internal/server"
)

// TestExpectBudget plays a caller whose expects cost hundreds of steps a
// byte (`\pL{330}z` under the compiled-cost cap) against a target that
// sends 4 KiB and closes, on a server whose budget of matching is the
// least there is: the 1.3 million steps would take the caller 20 s of
// budget, so the expect ends at its 1 s timeout, REASON_TIMEOUT, however
// the probe came (a Fetch, an expect_line, each probe of a Sweep), where
// without the budget it matches the 4 KiB at once and finds no match.
// A cheap expect over the same bytes costs nothing to speak of, and comes
// to its NO_MATCH as ever; with a costly refusal beside it, the refusal's
// matching is charged as an expect's is.
func TestExpectBudget(t *testing.T) {
	t.Parallel()
	e := probetest.Start(t, probetest.WithConfig(func(c *server.Config) { c.Admission.ExpectRate = admission.MinExpectRate }))
	sender := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte(strings.Repeat("b", 4<<10)))
		c.Close()
	})
	const costly = `\pL{330}z`
	timedOut := &wantError{stage: netprobev1.Stage_STAGE_EXPECT, reason: netprobev1.Reason_REASON_TIMEOUT, address: sender.Addr()}
	noMatch := &wantError{stage: netprobev1.Stage_STAGE_EXPECT, reason: netprobev1.Reason_REASON_NO_MATCH, address: sender.Addr()}
	for _, tc := range []struct {
		name  string
		steps []*netprobev1.Step
		want  *wantError
	}{
		{"a costly expect", []*netprobev1.Step{expect(costly)}, timedOut},
		{"a costly expect_line", []*netprobev1.Step{expectLine(costly)}, timedOut},
		{"a cheap expect", []*netprobev1.Step{expect(`^z`)}, noMatch},
		{"a cheap expect with a costly refusal", []*netprobev1.Step{refusing(expect(`^z`), costly)}, timedOut},
		{"a cheap expect_line with a costly refusal", []*netprobev1.Step{refusing(expectLine(`^z`), costly)}, timedOut},
	} {
		t.Run("Fetch/"+tc.name, func(t *testing.T) {
			t.Parallel()
			f := fetch(t, e.Probe, &netprobev1.FetchRequest{Target: tcpTarget(sender.Port()), Steps: tc.steps, Timeout: durationpb.New(time.Second)})
			checkError(t, f.summary.GetError(), tc.want)
		})
		t.Run("Sweep/"+tc.name, func(t *testing.T) {
			t.Parallel()
			req := &netprobev1.SweepRequest{Timeout: durationpb.New(time.Second)}
			for range 2 {
				st := sweepTarget("127.0.0.1", sender.Port())
				st.Steps = tc.steps
				req.Targets = append(req.Targets, st)
			}
			results, err := sweep(probetest.Context(t), t, e.Probe, req)
			if err != nil || len(results) != 2 {
				t.Fatalf("Sweep: %d results, %v", len(results), err)
			}
			for _, r := range results {
				checkError(t, r.GetSummary().GetError(), tc.want)
			}
		})
	}
}
