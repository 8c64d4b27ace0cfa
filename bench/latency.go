package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/exp/trace"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/service"
)

// benchLatency is the latency account of one Connect at 1 in flight: the
// p50 of the whole call, of a gRPC health check (a call that dials
// nothing) and of a bare dial+close from a process of its own, as probed
// dials; netprobe's own share is what the call takes beyond both. The
// share is then split from the execution tracer: a trace of probed while
// lone Connects run, and one while lone health checks do, read for the
// points each call's goroutine passes (service.Mark), for the states of
// the dial's goroutine, and for the time goroutines spent woken but not
// yet running, which is where a lone call waits on gRPC's hand-offs (the
// connection's reader hands the stream to a handler, the handler hands
// the response to the connection's writer).
func benchLatency(ctx context.Context, bin probedBin, o options) ([]row, error) {
	ln, err := acceptingTarget()
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	target := ln.Addr().String()
	pprofAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s, err := startProbed(bin, "--pprof-addr="+pprofAddr)
	if err != nil {
		return nil, err
	}
	defer s.stop()
	// The service's own clock of each probe, untraced: the dial
	// (connect_duration) and the probe from its start to its report
	// (total_duration).
	var mu sync.Mutex
	var dials, totals []time.Duration
	probe := func(ctx context.Context) error {
		res, err := s.client.Connect(ctx, "tcp", target, client.ConnectOptions{Timeout: 5 * time.Second})
		if err == nil {
			mu.Lock()
			dials, totals = append(dials, res.ConnectDuration), append(totals, res.TotalDuration)
			mu.Unlock()
		}
		return err
	}
	// healthOf is a health check of one probed.
	healthOf := func(s *server) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := s.client.Health(ctx)
			return err
		}
	}
	health := healthOf(s)
	// The same calls to a probed with one P: with no idle P, the Go
	// scheduler wakes no second thread to look for work when a goroutine
	// is handed work (see docs/performance.md).
	one, err := startProbed(probedBin{path: bin.path, gomaxprocs: 1})
	if err != nil {
		return nil, err
	}
	defer one.stop()
	probeOne := func(ctx context.Context) error {
		_, err := one.client.Connect(ctx, "tcp", target, client.ConnectOptions{Timeout: 5 * time.Second})
		return err
	}
	healthOne := healthOf(one)
	for _, op := range []func(context.Context) error{probe, probeOne} {
		if _, _, err := loop(ctx, 1, 200*time.Millisecond, op); err != nil {
			return nil, fmt.Errorf("connect probes: %w", err)
		}
	}

	p50 := func(op func(context.Context) error) (time.Duration, error) {
		_, lat, err := loop(ctx, 1, o.duration, op)
		if err != nil {
			return 0, err
		}
		return percentile(lat, 0.5), nil
	}
	var probeP50s, healthP50s, probeOneP50s, healthOneP50s, bareP50s, sleptP50s []time.Duration
	for range o.rounds {
		for _, m := range []struct {
			what string
			op   func(context.Context) error
			p50s *[]time.Duration
		}{
			{"connect probes", probe, &probeP50s},
			{"health", health, &healthP50s},
			{"connect probes at GOMAXPROCS=1", probeOne, &probeOneP50s},
			{"health at GOMAXPROCS=1", healthOne, &healthOneP50s},
		} {
			d, err := p50(m.op)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", m.what, err)
			}
			*m.p50s = append(*m.p50s, d)
		}
		bare, err := bareApart(ctx, target, 1, o.duration, 0)
		if err != nil {
			return nil, fmt.Errorf("bare dial from a process of its own: %w", err)
		}
		slept, err := bareApart(ctx, target, 1, o.duration, bareSleep)
		if err != nil {
			return nil, fmt.Errorf("bare dial after sleeping: %w", err)
		}
		bareP50s, sleptP50s = append(bareP50s, bare.P50), append(sleptP50s, slept.P50)
	}
	probeP50, healthP50, bareP50 := median(probeP50s), median(healthP50s), median(bareP50s)
	mu.Lock()
	dialP50, totalP50 := median(dials), median(totals)
	mu.Unlock()
	own := probeP50 - healthP50 - bareP50
	probeOneP50, healthOneP50, sleptP50 := median(probeOneP50s), median(healthOneP50s), median(sleptP50s)
	ownOne := probeOneP50 - healthOneP50 - bareP50

	traced := func(op func(context.Context) error) (account, error) {
		b, err := traceWhile(ctx, pprofAddr, op)
		if err != nil {
			return account{}, err
		}
		return readAccount(b)
	}
	pa, err := traced(probe)
	if err != nil {
		return nil, fmt.Errorf("trace of Connects: %w", err)
	}
	ha, err := traced(health)
	if err != nil {
		return nil, fmt.Errorf("trace of health checks: %w", err)
	}
	if pa.calls == 0 || ha.calls == 0 {
		return nil, fmt.Errorf("the traces hold %d Connects and %d health checks", pa.calls, ha.calls)
	}

	// own = (the handler beyond a health check's and the bare dial) +
	// (gRPC outside the handler beyond a health check's). The first is
	// split at the service's marks.
	call := func(a account) time.Duration { return a.phase(service.MarkCall, service.MarkReplied) }
	handler := call(pa) - call(ha) - bareP50
	outside := (probeP50 - call(pa)) - (healthP50 - call(ha))
	dial := pa.phase(service.MarkValidated, service.MarkDialed)
	closing := pa.phase(service.MarkReported, service.MarkClosed)
	// code marks the parts that are netprobe's own code, as opposed to
	// gRPC's or the dial's.
	parts := []struct {
		name string
		d    time.Duration
		note string
		code bool
	}{
		{"admission beyond a health check's", pa.phase(service.MarkCall, service.MarkAdmitted) - ha.phase(service.MarkCall, service.MarkAdmitted), "the rate and in-flight limits, before the request is read", true},
		{"decoding and interceptors, less a health check's", pa.phase(service.MarkAdmitted, service.MarkHandler) - ha.phase(service.MarkAdmitted, service.MarkReplied),
			fmt.Sprintf("%s a Connect; a health check's decoding, interceptors and handler %s", us(pa.phase(service.MarkAdmitted, service.MarkHandler)), us(ha.phase(service.MarkAdmitted, service.MarkReplied))), false},
		{"validation", pa.phase(service.MarkHandler, service.MarkValidated), "the request checked", true},
		{"dial and close beyond the bare dial", dial + closing - bareP50,
			fmt.Sprintf("dial %s (running %s, in system calls %s, woken and waiting to run %s, waiting on the network %s), close %s; the dial includes the probe's context, the resolve (none for an IP literal) and the policy's check",
				us(dial), us(pa.dial[trace.GoRunning]), us(pa.dial[trace.GoSyscall]), us(pa.dial[trace.GoRunnable]), us(pa.dial[trace.GoWaiting]), us(closing)), false},
		{"report", pa.phase(service.MarkDialed, service.MarkReported), "the attempts, TCP_INFO", true},
		{"observe", pa.phase(service.MarkClosed, service.MarkObserved), "the audit line, the metrics, the page's ring", true},
		{"return", pa.phase(service.MarkObserved, service.MarkReplied), "back through the interceptors", true},
	}
	rows := []row{
		{"Connect p50, 1 in flight", us(probeP50), "", "", fmt.Sprintf("medians of %d rounds; the latency account:", o.rounds)},
		{"  gRPC health check p50", us(healthP50), "", "", "the floor for a call"},
		{"  bare dial+close p50, from its own process", us(bareP50), "", "", "the floor for the probe"},
		{"  netprobe's own share", us(own), "", "", "the call less both floors; goal <= 30 µs"},
		{"  the probe by the service's own clock", us(totalP50), "", "", fmt.Sprintf("untraced: its total_duration; its connect_duration (the dial) %s", us(dialP50))},
		{"  of which, from the execution tracer (medians):", "", "", "", fmt.Sprintf("%d Connects and %d health checks traced", pa.calls, ha.calls)},
		{"    the handler beyond a health check's and the bare dial", us(handler), "", "", fmt.Sprintf("the handler: %s a Connect, %s a health check", us(call(pa)), us(call(ha)))},
	}
	var code time.Duration
	for _, p := range parts {
		rows = append(rows, row{"      " + p.name, us(p.d), "", "", p.note})
		if p.code {
			code += p.d
		}
	}
	rows = append(rows, row{"    gRPC outside the handler beyond a health check's", us(outside), "", "",
		fmt.Sprintf("reading the request, encoding and sending the reply, the hand-offs between goroutines; woken goroutines waited to run %s a Connect, %s a health check", us(pa.woken), us(ha.woken))})

	// The own share by cause, each measured apart: what probed at
	// GOMAXPROCS=1 saves, what sleeping costs a bare dial, netprobe's
	// own code from the trace, and what is left.
	scheduler := own - ownOne
	slept := sleptP50 - bareP50
	rows = append(rows,
		row{"  the own share by cause:", "", "", "", ""},
		row{"    Go's scheduler waking a second thread", us(scheduler), "", "", fmt.Sprintf("what probed at GOMAXPROCS=1 saves: there Connect %s, health check %s, own share %s", us(probeOneP50), us(healthOneP50), us(ownOne))},
		row{"    the kernel waking a dialer that slept", us(slept), "", "", fmt.Sprintf("a bare dial+close after sleeping %s: %s", bareSleep, us(sleptP50))},
		row{"    netprobe's own code", us(code), "", "", "admission, validation, report, observe and return, traced"},
		row{"    the rest", us(ownOne - slept - code), "", "", "gRPC's larger request and reply, the dial's context and policy check"},
	)
	return rows, nil
}

// bareSleep is how long the bare dialer sleeps before each dial, to
// measure a dial that follows an idle moment as a lone probe's does.
const bareSleep = 200 * time.Microsecond

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// traceWhile takes a second of probed's execution trace (its
// /debug/pprof/trace) while op runs back to back, one at a time.
func traceWhile(ctx context.Context, pprofAddr string, op func(context.Context) error) ([]byte, error) {
	ctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var opErr error
	wg.Go(func() {
		for ctx.Err() == nil {
			if err := op(ctx); err != nil && ctx.Err() == nil {
				opErr = err
				return
			}
		}
	})
	defer func() {
		stop()
		wg.Wait()
	}()
	body, err := get(ctx, "http://"+pprofAddr+"/debug/pprof/trace?seconds=1")
	if err != nil {
		return nil, err
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	stop()
	wg.Wait()
	return b, errors.Join(err, opErr)
}

// account is what a trace says of the calls it saw.
type account struct {
	// calls is how many calls the trace saw from their start
	// (service.MarkCall) to their reply (service.MarkReplied).
	calls int
	// phases are the median time from each mark to the next a call
	// passed, by "from to".
	phases map[string]time.Duration
	// dial is the median time the dial phase spent in each state:
	// running, in system calls, woken and waiting to run, waiting (on the
	// network).
	dial map[trace.GoState]time.Duration
	// woken is the time goroutines spent runnable (woken, waiting for a
	// thread to run on), in all, a call.
	woken time.Duration
}

// phase is the median time from one mark to the next.
func (a account) phase(from, to string) time.Duration { return a.phases[from+" "+to] }

// readAccount reads an execution trace for the service's marks on each
// call's goroutine (service.Mark) and the goroutines' states.
func readAccount(b []byte) (account, error) {
	r, err := trace.NewReader(bytes.NewReader(b))
	if err != nil {
		return account{}, err
	}
	type mark struct {
		point string
		at    trace.Time
	}
	type gstate struct {
		state trace.GoState
		since trace.Time
		// marks are the current call's, from its MarkCall.
		marks []mark
		// inDial is the time spent in each state since MarkValidated,
		// until MarkDialed.
		inDial map[trace.GoState]time.Duration
	}
	var (
		gs     = map[trace.GoID]*gstate{}
		phases = map[string][]time.Duration{}
		inDial = map[trace.GoState][]time.Duration{}
		woken  time.Duration
		calls  int
	)
	g := func(id trace.GoID) *gstate {
		if gs[id] == nil {
			gs[id] = &gstate{}
		}
		return gs[id]
	}
	for {
		ev, err := r.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return account{}, err
		}
		switch ev.Kind() {
		case trace.EventLog:
			l := ev.Log()
			if l.Category != service.MarkCategory {
				continue
			}
			st := g(ev.Goroutine())
			switch l.Message {
			case service.MarkCall:
				st.marks = st.marks[:0]
			case service.MarkValidated:
				st.inDial = map[trace.GoState]time.Duration{}
			case service.MarkDialed:
				if st.inDial != nil {
					st.inDial[st.state] += time.Duration(ev.Time() - st.since)
					for _, s := range []trace.GoState{trace.GoRunning, trace.GoSyscall, trace.GoRunnable, trace.GoWaiting} {
						inDial[s] = append(inDial[s], st.inDial[s])
					}
				}
				st.inDial = nil
			}
			if l.Message != service.MarkCall && len(st.marks) == 0 {
				// A call begun before the trace was.
				continue
			}
			st.marks = append(st.marks, mark{l.Message, ev.Time()})
			if l.Message != service.MarkReplied {
				continue
			}
			calls++
			for i := 1; i < len(st.marks); i++ {
				key := st.marks[i-1].point + " " + st.marks[i].point
				phases[key] = append(phases[key], time.Duration(st.marks[i].at-st.marks[i-1].at))
			}
			key := service.MarkCall + " " + service.MarkReplied
			phases[key] = append(phases[key], time.Duration(ev.Time()-st.marks[0].at))
			st.marks = st.marks[:0]
		case trace.EventStateTransition:
			tr := ev.StateTransition()
			if tr.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			st := g(tr.Resource.Goroutine())
			_, to := tr.Goroutine()
			if st.since != 0 {
				d := time.Duration(ev.Time() - st.since)
				if st.state == trace.GoRunnable {
					woken += d
				}
				if st.inDial != nil {
					st.inDial[st.state] += d
				}
			}
			st.state, st.since = to, ev.Time()
		}
	}
	a := account{calls: calls, phases: map[string]time.Duration{}, dial: map[trace.GoState]time.Duration{}}
	for key, ds := range phases {
		a.phases[key] = median(ds)
	}
	for s, ds := range inDial {
		a.dial[s] = median(ds)
	}
	if calls > 0 {
		a.woken = woken / time.Duration(calls)
	}
	return a, nil
}
