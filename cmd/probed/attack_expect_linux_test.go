package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
)

// The attacks on what an expect costs (issue 21: H2, M4, L5's neighbour
// the port), made on the real binary in its default configuration, with
// no token, and measured in its process: RSS and heap (footprint), and CPU
// time (cpuTime).

// startDefault runs probed as it is by default, measured as the victims
// of attack_linux_test.go are, and returns it with a client.
func startDefault(t *testing.T) (*victim, netprobev1.ProbeServiceClient) {
	t.Helper()
	p := probetest.StartProbed(t, measured(exec.Command(probedBin, "--listen=127.0.0.1:0")))
	probe := netprobev1.NewProbeServiceClient(dial(t, p.Addr))
	// Once served, the heap has grown to where it idles.
	if _, err := probe.ResolveService(probetest.Context(t), &netprobev1.ResolveServiceRequest{Name: "http"}); err != nil {
		t.Fatal(err)
	}
	return &victim{Probed: p}, probe
}

// cpuTime returns the CPU time process pid has used, user and system
// (/proc/PID/stat, in USER_HZ ticks of 10 ms).
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command's name, which is in parentheses:
	// state is field 3, utime 14 and stime 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// violations returns the fields a refusal names, with what it says of
// each.
func violations(t *testing.T, err error) map[string]string {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("status %v, want INVALID_ARGUMENT", err)
	}
	out := map[string]string{}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out[v.GetField()] = v.GetDescription()
			}
		}
	}
	return out
}

func expectStep(re string) *netprobev1.Step {
	return &netprobev1.Step{Action: &netprobev1.Step_Expect{Expect: re}}
}

// costly is the i-th of distinct expressions of 990 bytes that compile to
// 110,000 instructions, some 14 MB with their state: one of them in each
// target of a Sweep grew probed's heap to 2.8 GiB in 4 s.
func costly(i int) string {
	return strings.Repeat(`\pL{1000}`, 109) + fmt.Sprintf(`\pL{%03d}`, i)
}

// fetchEnd runs a Fetch to its end: the refusal, or the summary.
func fetchEnd(ctx context.Context, probe netprobev1.ProbeServiceClient, req *netprobev1.FetchRequest) (*netprobev1.FetchSummary, error) {
	stream, err := probe.Fetch(ctx, req)
	if err != nil {
		return nil, err
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if s := msg.GetSummary(); s != nil {
			return s, nil
		}
	}
}

// TestAttackExpectSweep sends the one call that once killed probed: a
// Sweep of 900 targets, each with an expect of its own that compiles to
// megabytes (1 MB of request). It is refused, naming the first target's
// expect, saying its cost and the cap, before anything is dialled, and
// probed grows by less than 64 MiB.
func TestAttackExpectSweep(t *testing.T) {
	t.Parallel()
	v, probe := startDefault(t)
	never := probetest.Listen(t, "127.0.0.1:0", nil)
	req := &netprobev1.SweepRequest{}
	for i := range 900 {
		req.Targets = append(req.Targets, &netprobev1.SweepTarget{
			Target: &netprobev1.Target{Host: "127.0.0.1", Port: never.Port()},
			Steps:  []*netprobev1.Step{expectStep(costly(i))},
		})
	}
	base := v.footprint(t)
	stream, err := probe.Sweep(probetest.Context(t), req)
	if err == nil {
		_, err = stream.Recv()
	}
	got := violations(t, err)
	if d := got["targets[0].steps[0].expect"]; len(got) != 1 || !regexp.MustCompile(`^costs \d{8} bytes compiled .*, over the cap of 65536$`).MatchString(d) {
		t.Errorf("violations %v, want the first target's expect, over the cap", got)
	}
	v.grew(t, base)
	if !never.AcceptedNothing() {
		t.Error("the refused sweep dialled its targets")
	}
}

// classes is an expression of 50 KiB of program: \pL eight times, each
// its own range table. Twenty of them, told apart by a number, come to
// the most a request may hold.
func classes(i int) string {
	return strings.Repeat(`\pL`, 8) + strconv.Itoa(i)
}

// TestAttackExpectFetches sends Fetches of many costly expects, eight at
// once: 64 steps of the expressions that once held 554 MiB a Fetch are
// refused; steps that hold as much as a request may (20 distinct
// expressions of 50 KiB of program) run, held in their first expect by a
// silent target, and the eight grow probed by less than 64 MiB.
func TestAttackExpectFetches(t *testing.T) {
	t.Parallel()
	v, probe := startDefault(t)
	silent := probetest.Listen(t, "127.0.0.1:0", nil)
	target := &netprobev1.Target{Host: "127.0.0.1", Port: silent.Port()}
	base := v.footprint(t)
	var refused, held []*netprobev1.Step
	for i := range 64 {
		refused = append(refused, expectStep(costly(i)))
	}
	for i := range 20 {
		held = append(held, expectStep(classes(i)))
	}
	ctx := probetest.Context(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, err := fetchEnd(ctx, probe, &netprobev1.FetchRequest{Target: target, Steps: refused})
			if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "steps[0].expect: costs") {
				t.Errorf("64 costly steps: %v, want INVALID_ARGUMENT for steps[0]", err)
			}
		})
	}
	wg.Wait()
	if !silent.AcceptedNothing() {
		t.Error("a refused Fetch dialled its target")
	}
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range 8 {
		wg.Go(func() {
			if _, err := fetchEnd(hctx, probe, &netprobev1.FetchRequest{Target: target, Steps: held}); status.Code(err) != codes.Canceled {
				t.Errorf("a held Fetch ended before it was cancelled: %v", err)
			}
		})
	}
	for i := 0; i < 8; i++ {
		select {
		case <-silent.Accepted:
		case <-ctx.Done():
			t.Fatalf("%d of 8 Fetches connected", i)
		}
	}
	// Each connected once it was validated; let the last reach its
	// expect, then weigh.
	waitInFlight(t, v.Probed, 8)
	v.grew(t, base)
	cancel()
	wg.Wait()
}

// waitInFlight waits until p has n probes in flight.
func waitInFlight(t *testing.T, p *probetest.Probed, n float64) {
	t.Helper()
	var got float64
	probetest.Eventually(t, func() bool {
		got, _ = metricValue(scrape(t, "http://"+p.MetricsAddr+"/metrics")["netprobe_probes_in_flight"], nil)
		return got == n
	}, func() string { return fmt.Sprintf("%v probes in flight, want %v", got, n) })
}

// TestAttackExpectCPU runs eight costly expects at once (.{400}x, the
// most instructions a thread can wait at within the caps: some 7 µs a
// byte) against targets that send 64 KiB of "b" and fall silent, or send
// "b" as fast as they are read: each ends at its 2 s timeout, within
// 10%, as EXPECT / TIMEOUT, and probed spends at most one CPU-second per
// second of timeout on each. (They are one caller's, held together to its
// budget of matching: TestAttackExpectBudget.) Without that budget it
// takes both CPUs of a small machine for the timeout: it does not run
// beside the package's other tests, and a probe's time is the one probed
// reports (a client starved of CPU sees the end late).
func TestAttackExpectCPU(t *testing.T) {
	const timeout = 2 * time.Second
	for _, tc := range []struct {
		name  string
		flood bool
	}{{"64 KiB then silence", false}, {"a flood", true}} {
		t.Run(tc.name, func(t *testing.T) {
			v, probe := startDefault(t)
			chunk := bytes.Repeat([]byte("b"), 64<<10)
			tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
				for {
					if _, err := c.Write(chunk); err != nil || !tc.flood {
						break
					}
				}
				probetest.WaitClosed(c)
			})
			ctx := probetest.Context(t)
			cpu := cpuTime(t, v.Cmd.Process.Pid)
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					start := time.Now()
					s, err := fetchEnd(ctx, probe, &netprobev1.FetchRequest{
						Target:  &netprobev1.Target{Host: "127.0.0.1", Port: tg.Port()},
						Steps:   []*netprobev1.Step{expectStep(`.{400}x`)},
						Timeout: durationpb.New(timeout),
					})
					took := time.Since(start)
					if err != nil || s.GetError().GetStage() != netprobev1.Stage_STAGE_EXPECT || s.GetError().GetReason() != netprobev1.Reason_REASON_TIMEOUT {
						t.Errorf("summary %v, %v; want EXPECT / TIMEOUT", s.GetError(), err)
					}
					if d := s.GetTotalDuration().AsDuration(); d > timeout*11/10 {
						t.Errorf("the probe took %v, past its timeout of %v by more than 10%%", d, timeout)
					}
					if took > timeout*3/2 {
						t.Errorf("the call took %v, past the probe's timeout of %v by more than half", took, timeout)
					}
				})
			}
			wg.Wait()
			spent := cpuTime(t, v.Cmd.Process.Pid) - cpu
			t.Logf("8 probes of %v: %v of CPU", timeout, spent)
			if spent > 8*timeout {
				t.Errorf("probed spent %v of CPU on 8 probes of %v, more than a second a second each", spent, timeout)
			}
		})
	}
}

// TestAttackExpectTrickle plays a target that sends a 16-byte line every
// half millisecond, never what the expect looks for, as the *_starttls
// modules meet it: the expect matches each byte once, where matching
// everything pending again on each line cost some 80% of a CPU. The 2 s
// probe, a Sweep's (whose dialogue sends nothing to the caller, as a
// module's does not), costs probed less than 0.3 s of CPU, with expect or
// expect_line, and with the refusal the STARTTLS dialogues give an
// expect, which matches each byte once too. The target's pace needs a CPU when it wants one: the test
// does not run beside the package's other tests.
func TestAttackExpectTrickle(t *testing.T) {
	const timeout = 2 * time.Second
	for _, tc := range []struct {
		name string
		step *netprobev1.Step
	}{
		{"expect at a line's start", expectStep(`^220 `)},
		{"expect anywhere", expectStep(`(220|250) ready`)},
		{"expect_line", &netprobev1.Step{Action: &netprobev1.Step_ExpectLine{ExpectLine: `^220 `}}},
		{"expect with a refusal", &netprobev1.Step{Action: &netprobev1.Step_Expect{Expect: `^220 `}, Refusal: `^[45]\d\d [^\n]*\n`}},
		{"expect_line with a refusal", &netprobev1.Step{Action: &netprobev1.Step_ExpectLine{ExpectLine: `^220 `}, Refusal: `^[45]\d\d `}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, probe := startDefault(t)
			tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
				tick := time.NewTicker(500 * time.Microsecond)
				defer tick.Stop()
				for range tick.C {
					if _, err := c.Write([]byte("220-still here\r\n")); err != nil {
						return
					}
				}
			})
			cpu := cpuTime(t, v.Cmd.Process.Pid)
			stream, err := probe.Sweep(probetest.Context(t), &netprobev1.SweepRequest{
				Targets: []*netprobev1.SweepTarget{{Target: &netprobev1.Target{Host: "127.0.0.1", Port: tg.Port()}, Steps: []*netprobev1.Step{tc.step}}},
				Timeout: durationpb.New(timeout),
			})
			var r *netprobev1.SweepResponse
			if err == nil {
				r, err = stream.Recv()
			}
			spent := cpuTime(t, v.Cmd.Process.Pid) - cpu
			s := r.GetSummary()
			if err != nil || s.GetError().GetReason() != netprobev1.Reason_REASON_TIMEOUT {
				t.Fatalf("summary %v, %v; want a timeout", s, err)
			}
			t.Logf("%d bytes received in %v: %v of CPU", s.GetBytesReceived(), timeout, spent)
			if s.GetBytesReceived() < 16<<10 {
				t.Errorf("only %d bytes received: the target did not trickle as it should", s.GetBytesReceived())
			}
			if spent > 300*time.Millisecond {
				t.Errorf("a %v probe of a trickling target cost %v of CPU, want less than 0.3 s", timeout, spent)
			}
		})
	}
}

// TestHeldExpectStacks holds 500 Fetches waiting in an expect step, as
// TestHeldProbeStacks holds idle ones: the expect's frames and its
// matcher's keep each to one stack of 8 KiB (the matcher's state is on
// the heap, and matching runs and returns between reads).
func TestHeldExpectStacks(t *testing.T) {
	t.Parallel()
	const n = 500
	ctx := probetest.Context(t)
	heldStack(t, "probes held in an expect", func() float64 {
		// The target counts the probes that have sent their line, and are
		// then in their expect.
		var waiting atomic.Int64
		silent := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
			if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
				waiting.Add(1)
			}
			probetest.WaitClosed(c)
		})
		p := probetest.StartProbed(t, exec.Command(probedBin, "--listen=127.0.0.1:0",
			"--max-in-flight=10000", "--max-in-flight-per-caller=10000", "--rate=1e6", "--burst=1000000",
			"--max-streams-per-connection=10000"))
		defer p.Stop()
		probe := netprobev1.NewProbeServiceClient(dial(t, p.Addr))
		if _, err := probe.ResolveService(ctx, &netprobev1.ResolveServiceRequest{Name: "http"}); err != nil {
			t.Fatal(err)
		}
		before := scrape(t, "http://"+p.MetricsAddr+"/metrics")
		hctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		req := &netprobev1.FetchRequest{
			Target:  &netprobev1.Target{Host: "127.0.0.1", Port: silent.Port()},
			Steps:   []*netprobev1.Step{{Action: &netprobev1.Step_Send{Send: []byte("EHLO probe\r\n")}}, expectStep(`^250[ -](\S+) (.*)$`)},
			Timeout: durationpb.New(time.Minute),
		}
		for range n {
			wg.Go(func() {
				if _, err := fetchEnd(hctx, probe, req); hctx.Err() == nil {
					t.Errorf("a held Fetch ended before it was cancelled: %v", err)
				}
			})
		}
		probetest.Eventually(t, func() bool { return waiting.Load() >= n }, func() string {
			return fmt.Sprintf("%d of %d probes in their expect", waiting.Load(), n)
		})
		after := scrape(t, "http://"+p.MetricsAddr+"/metrics")
		was, _ := metricValue(before["go_memstats_stack_inuse_bytes"], nil)
		now, _ := metricValue(after["go_memstats_stack_inuse_bytes"], nil)
		perProbe := (now - was) / n
		t.Logf("%d held in an expect: %.1f KiB more stack each", n, perProbe/1024)
		return perProbe
	})
}

// TestAttackExpectBudget plays one caller that spends the CPU on costly
// expects that pass the cost cap (issue 21, F4): alice runs one Sweep of
// 64 probes at once, each expecting \pL{330}z (330 steps, some 8 µs, a
// byte) of a target that sends 64 KiB of "b" and falls silent, with a 2 s
// timeout, which without a budget wanted 64 x 0.5 s of CPU and took both
// CPUs of a small machine for the 2 s (bob's Connect waited 6.4 s in the
// attack pass, with 2,000 probes of 10 s). Held to --expect-rate (8
// million steps a second, a quarter of a CPU at the most; a second's worth
// at once), alice's probes end as EXPECT / TIMEOUT, probed spends about
// that budget's CPU over the attack, and bob's Connects, made while it
// lasts, stay fast. It takes a CPU of a small machine when the budget is
// gone: it does not run beside the package's other tests.
func TestAttackExpectBudget(t *testing.T) {
	const (
		timeout = 2 * time.Second
		probes  = 64
	)
	v := startVictim(t)
	var connected atomic.Int64
	chunk := bytes.Repeat([]byte("b"), 64<<10)
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		connected.Add(1)
		c.Write(chunk)
		probetest.WaitClosed(c)
	})
	up := probetest.Listen(t, "127.0.0.1:0", nil)
	ctx := probetest.Context(t)
	alice := netprobev1.NewProbeServiceClient(dial(t, v.Addr))
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+aliceToken)
	bob := netprobev1.NewProbeServiceClient(dial(t, v.Addr))
	bctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bobToken)
	connect := &netprobev1.ConnectRequest{Target: &netprobev1.Target{Host: "127.0.0.1", Port: up.Port()}}
	if _, err := bob.Connect(bctx, connect); err != nil {
		t.Fatal(err)
	}

	req := &netprobev1.SweepRequest{Concurrency: probes, Timeout: durationpb.New(timeout)}
	for range probes {
		req.Targets = append(req.Targets, &netprobev1.SweepTarget{
			Target: &netprobev1.Target{Host: "127.0.0.1", Port: tg.Port()},
			Steps:  []*netprobev1.Step{expectStep(`\pL{330}z`)},
		})
	}
	cpu := cpuTime(t, v.Cmd.Process.Pid)
	start := time.Now()
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		stream, err := alice.Sweep(actx, req)
		if err != nil {
			t.Errorf("Sweep: %v", err)
			return
		}
		for n := 0; ; n++ {
			r, err := stream.Recv()
			if errors.Is(err, io.EOF) && n == probes {
				return
			}
			if err != nil {
				t.Errorf("after %d results: %v", n, err)
				return
			}
			if e := r.GetSummary().GetError(); e.GetStage() != netprobev1.Stage_STAGE_EXPECT || e.GetReason() != netprobev1.Reason_REASON_TIMEOUT {
				t.Errorf("alice's probe: %v, want EXPECT / TIMEOUT", e)
			}
		}
	}()
	// Once every probe of alice has its 64 KiB, bob starts a Connect
	// every 20 ms (within his rate), each whether the one before has
	// ended or not, until the attack is over: a slow spell is as many
	// slow Connects as it lasts ticks.
	probetest.Eventually(t, func() bool { return connected.Load() == probes }, func() string {
		return fmt.Sprintf("%d of alice's %d probes connected", connected.Load(), probes)
	})
	var (
		mu        sync.Mutex
		latencies []time.Duration
		wg        sync.WaitGroup
	)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for attacking := true; attacking; {
		select {
		case <-swept:
			attacking = false
		case <-tick.C:
			wg.Go(func() {
				began := time.Now()
				if resp, err := bob.Connect(bctx, connect); err != nil || resp.GetError() != nil {
					t.Errorf("bob's Connect: %v, %v", resp.GetError(), err)
				}
				mu.Lock()
				latencies = append(latencies, time.Since(began))
				mu.Unlock()
			})
		}
	}
	elapsed := time.Since(start)
	wg.Wait()
	spent := cpuTime(t, v.Cmd.Process.Pid) - cpu
	slices.Sort(latencies)
	if len(latencies) < 10 {
		t.Fatalf("bob connected %d times while the attack lasted %v", len(latencies), elapsed)
	}
	p50, p90 := latencies[len(latencies)/2], latencies[len(latencies)*9/10]
	t.Logf("an attack of %v: %v of probed's CPU; bob's %d Connects: p50 %v, p90 %v, max %v", elapsed.Round(time.Millisecond), spent, len(latencies), p50, p90, latencies[len(latencies)-1])
	if p50 > 100*time.Millisecond {
		t.Errorf("bob's Connects took %v (p50) while alice's expects ran, want well under 100 ms", p50)
	}
	// The budget is a second's worth at once, then a quarter of a CPU a
	// second at 28 ns a step, the most a step costs here: some 0.8 s of
	// CPU, with the sweep's reads and bob's calls, for an attack of 2 s,
	// where without it probed took both CPUs (4 to 5 s). It counts steps,
	// not time, so a slower machine spends more: the bound is twice the
	// budget.
	if bound := (time.Second + elapsed) / 2; spent > bound {
		t.Errorf("probed spent %v of CPU in the %v of the attack, want at most %v", spent, elapsed.Round(time.Millisecond), bound)
	}
	refused, _ := metricValue(scrape(t, "http://"+v.MetricsAddr+"/metrics")["netprobe_limit_refusals_total"], map[string]string{"limit": "match_steps_per_caller"})
	if refused < 1 {
		t.Errorf("netprobe_limit_refusals_total{limit=match_steps_per_caller} = %v, want alice's expects counted", refused)
	}
}
