package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// defaultSweepConcurrency is a sweep's concurrency when it asks for none.
const defaultSweepConcurrency = 16

// maxSweepTraces is how many traces a sweep runs at most. A trace sends
// up to maxTraceHops x maxProbesPerHop SYNs and may take its timeout;
// the in-flight limits bound how many run at once (a trace holds its
// probe's place), and this, how many one call sends in all: at most
// 10,240 SYNs, where a sweep of MaxSweepTargets traced entries would be
// millions.
const maxSweepTraces = 16

// sweepJob is a validated SweepTarget.
type sweepJob struct {
	index   uint32
	target  target
	timeout time.Duration
	expand  netprobev1.Expand
	tls     *tlsParams
	// steps are the entry's dialogue, if any.
	steps []step
	// icmp are the options of an ICMP entry's echoes.
	icmp *icmpParams
	// trace, when set, traces the path of the entry's probes.
	trace *traceParams
	// asked is the target as the request gave it.
	asked *netprobev1.Target
}

func (s *Server) validateSweep(req *netprobev1.SweepRequest) ([]sweepJob, int, error) {
	var v violations
	n := len(req.GetTargets())
	switch {
	case n == 0:
		v.add("targets", "at least one target is required")
	case n > s.cfg.MaxSweepTargets:
		v.add("targets", "%d targets is over the server's cap of %d", n, s.cfg.MaxSweepTargets)
		return nil, 0, v.err()
	}
	defaultTimeout := s.validateTimeout(&v, "timeout", req.GetTimeout())
	jobs := make([]sweepJob, 0, n)
	// The entries' expressions are compiled once each, and held to one
	// cap for the whole sweep.
	exps := &expects{}
	for i, st := range req.GetTargets() {
		prefix := fmt.Sprintf("targets[%d].", i)
		var sub violations
		asked := st.GetTarget()
		checked := asked
		icmp := asked.GetNetwork() == netprobev1.Network_NETWORK_ICMP
		if st.GetExpand() == netprobev1.Expand_EXPAND_SRV && icmp {
			sub.add("expand", "an SRV name brings ports, and an ICMP echo has none")
		}
		if st.GetExpand() == netprobev1.Expand_EXPAND_SRV && asked != nil && !icmp {
			if asked.GetPort() != 0 || asked.GetService() != "" {
				sub.add("target.port", "an SRV name brings its own ports: leave port and service unset")
			}
			// The SRV records give the port; validate the rest.
			checked = proto.CloneOf(asked)
			checked.Port = 1
		}
		t := validateTarget(&sub, checked)
		s.validateSource(&sub, "target.source_address", &t, asked.GetSourceAddress())
		if st.GetExpand() == netprobev1.Expand_EXPAND_SRV {
			t.port = 0
		}
		switch st.GetExpand() {
		case netprobev1.Expand_EXPAND_UNSPECIFIED, netprobev1.Expand_EXPAND_ADDRESSES, netprobev1.Expand_EXPAND_SRV:
		default:
			sub.add("expand", "unknown expansion %d", st.GetExpand())
		}
		timeout := defaultTimeout
		if st.GetTimeout() != nil {
			timeout = s.validateTimeout(&sub, "timeout", st.GetTimeout())
		}
		tp := validateTLS(&sub, "tls", st.GetTls(), t)
		if tp != nil && st.GetExpand() == netprobev1.Expand_EXPAND_SRV && st.GetTls().GetServerName() == "" {
			// Each SRV entry is verified for its own host, not the SRV name.
			tp.serverName = ""
		}
		if icmp && tp != nil {
			sub.add("tls", "an ICMP echo has no TLS handshake")
		}
		ip := validateICMP(&sub, "icmp", st.GetIcmp(), t)
		tr := s.validateTrace(&sub, "trace", st.GetTrace(), t)
		steps := s.validateSteps(&sub, "", st.GetSteps(), t.network != "tcp", st.GetTls() != nil, exps)
		if n := len(st.GetSteps()); n > 0 && n <= maxSteps && !isExpect(st.GetSteps()[n-1]) {
			sub.add("steps", "a sweep's dialogue is a check: its last step is an expect")
		}
		v.merge(prefix, &sub)
		jobs = append(jobs, sweepJob{index: uint32(i), target: t, timeout: timeout, expand: st.GetExpand(), tls: tp, steps: steps, icmp: ip, trace: tr, asked: asked})
	}
	concurrency := int(req.GetConcurrency())
	if concurrency == 0 {
		concurrency = defaultSweepConcurrency
	}
	// A sweep asking for more than the server allows is bounded, not
	// refused.
	concurrency = min(concurrency, s.cfg.MaxSweepConcurrency, n)
	return jobs, concurrency, v.err()
}

// isExpect reports whether st is an expect or an expect_line.
func isExpect(st *netprobev1.Step) bool {
	switch st.GetAction().(type) {
	case *netprobev1.Step_Expect, *netprobev1.Step_ExpectLine:
		return true
	}
	return false
}

// Sweep implements netprobev1.ProbeServiceServer.
//
// Every target gets one result. An entry runs, expansion and probes, on a
// goroutine of its own, at most concurrency at once; each probe takes its
// place within the server's limits first (Config.Limiter), waiting for one
// as long as the sweep may last. Near the call's deadline, once the server
// drains, or when it cuts the sweep short, what is left is reported as
// abandoned, and the stream ends OK.
func (s *Server) Sweep(req *netprobev1.SweepRequest, stream grpc.ServerStreamingServer[netprobev1.SweepResponse]) error {
	return s.SweepTo(stream.Context(), req, stream.Send)
}

// ValidateSweep checks req as Sweep does before it probes anything: the
// INVALID_ARGUMENT a Sweep of req would be, or nil.
func (s *Server) ValidateSweep(req *netprobev1.SweepRequest) error {
	_, _, err := s.validateSweep(req)
	return err
}

// SweepTo runs a Sweep for the caller of ctx, its results leaving through
// send, in order of finish: how a Sweep's results leave the service,
// whoever asked (the gRPC method sends each on its stream, a fleet's
// fan-out marks each with its vantage). Once send fails, the results
// left are dropped: the caller is gone, and ctx ends the sweep.
func (s *Server) SweepTo(ctx context.Context, req *netprobev1.SweepRequest, send func(*netprobev1.SweepResponse) error) error {
	jobs, concurrency, err := s.validateSweep(req)
	if err != nil {
		return err
	}
	for i, job := range jobs {
		if err := s.grantIdentity(ctx, fmt.Sprintf("targets[%d].tls", i), job.tls); err != nil {
			return err
		}
	}
	// The sweep's budget ends a margin before the caller's deadline, to
	// report what is left, and Cut ends it too.
	sctx, done := s.cuttable(ctx)
	defer done()
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		sctx, cancel = context.WithDeadline(sctx, d.Add(-sweepMargin(time.Until(d), len(jobs))))
		defer cancel()
	}
	sw := &sweep{
		s:       s,
		ctx:     sctx,
		callCtx: ctx,
		results: make(chan *netprobev1.SweepResponse, concurrency),
	}
	sw.extra.Store(int64(s.cfg.MaxSweepTargets - len(jobs)))
	sw.traces.Store(maxSweepTraces)
	go sw.run(jobs, concurrency)

	var sendErr error
	for r := range sw.results {
		if sendErr == nil {
			sendErr = send(r)
		}
	}
	if err := callerGone(ctx); err != nil {
		return err
	}
	return sendErr
}

// sweepMargin is how long before the caller's deadline a sweep stops
// probing, to report what is left before the deadline reaches the caller:
// a tenth of the time left, or if more, a base and a little per target, as
// every target is a result to send; never more than a quarter of the time
// left.
func sweepMargin(left time.Duration, targets int) time.Duration {
	return min(left/4, max(left/10, 250*time.Millisecond+time.Duration(targets)*20*time.Microsecond))
}

// sweep is one Sweep call in progress.
type sweep struct {
	s *Server
	// ctx is the sweep's budget; callCtx is the call's, for the audit.
	ctx, callCtx context.Context
	results      chan *netprobev1.SweepResponse
	// extra is how many more targets expansions may add, under
	// MaxSweepTargets.
	extra atomic.Int64
	// traces is how many more traces the sweep may run, under
	// maxSweepTraces.
	traces atomic.Int64
}

// run starts the entries, concurrency at a time and each once it has its
// first probe's place within the limits, and closes results once every
// target has one. So a sweep waiting for places holds no more than this
// goroutine.
func (sw *sweep) run(jobs []sweepJob, concurrency int) {
	defer close(sw.results)
	var entries sync.WaitGroup
	defer entries.Wait()
	slots := make(chan struct{}, concurrency)
	for i, job := range jobs {
		var release func()
		select {
		case slots <- struct{}{}:
			release = sw.admit()
		case <-sw.ctx.Done():
		case <-sw.s.draining:
		}
		if release == nil {
			for _, left := range jobs[i:] {
				sw.results <- &netprobev1.SweepResponse{Index: left.index, Target: left.asked, Abandoned: true}
			}
			return
		}
		entries.Go(func() {
			defer func() { <-slots }()
			sw.entry(job, release)
		})
	}
}

// admit waits for a probe's place within the server's limits, and returns
// the function that gives it back; nil when the sweep is over first.
func (sw *sweep) admit() (release func()) {
	if sw.over() {
		return nil
	}
	release = func() {}
	if l := sw.s.cfg.Limiter; l != nil {
		var err error
		if release, err = l.WaitProbe(sw.ctx); err != nil {
			return nil
		}
	}
	if sw.over() {
		release()
		return nil
	}
	return release
}

// over reports whether the sweep is to start nothing more: its budget is
// spent (callerGone says why both ctx and the clock are read), the caller
// left, or the server is draining.
func (sw *sweep) over() bool {
	return callerGone(sw.ctx) != nil || sw.s.isDraining()
}

// entry runs one entry, expanding it first if asked, and sends each
// probe's result. It has the first probe's place (release); each further
// target of an expanded entry waits for one of its own.
func (sw *sweep) entry(job sweepJob, release func()) {
	start := time.Now()
	targets, perr := sw.s.expand(sw.ctx, job)
	if perr != nil {
		release()
		// An entry whose expansion failed is a probe that failed at its
		// lookup: audited and counted like one.
		resp := &netprobev1.ConnectResponse{Error: perr}
		sw.s.observe(sw.callCtx, Report{Method: "Sweep", Target: job.asked, Connect: resp, Error: perr, Duration: time.Since(start)})
		sw.results <- &netprobev1.SweepResponse{
			Index:     job.index,
			Target:    job.asked,
			Connect:   resp,
			Abandoned: sw.over(),
		}
		return
	}
	if n := int64(len(targets) - 1); n > 0 {
		// Expanded targets count against MaxSweepTargets: those past it
		// are reported, not probed.
		if left := sw.extra.Add(-n); left < 0 {
			keep := len(targets) + int(max(left, -n))
			for _, t := range targets[keep:] {
				sw.results <- &netprobev1.SweepResponse{Index: job.index, Target: targetProto(t, job.asked), Connect: &netprobev1.ConnectResponse{Error: overCap(t, sw.s.cfg.MaxSweepTargets)}}
			}
			targets = targets[:keep]
		}
	}
	for i, t := range targets {
		if i > 0 {
			if release = sw.admit(); release == nil {
				for _, t := range targets[i:] {
					sw.results <- &netprobev1.SweepResponse{Index: job.index, Target: targetProto(t, job.asked), Abandoned: true}
				}
				return
			}
		}
		sw.results <- sw.probe(job, t)
		release()
	}
}

// overCap is the error of a target an expansion added past max.
func overCap(t target, max int) *netprobev1.ProbeError {
	return &netprobev1.ProbeError{
		Stage:   netprobev1.Stage_STAGE_POLICY,
		Reason:  netprobev1.Reason_REASON_LIMIT,
		Address: t.host,
		Message: fmt.Sprintf("not probed: the sweep's entries expand to more than the server's cap of %d targets", max),
	}
}

// probe probes one target, once it has its place within the limits.
func (sw *sweep) probe(job sweepJob, t target) *netprobev1.SweepResponse {
	asked := targetProto(t, job.asked)
	start := time.Now()
	pctx, cancel := context.WithTimeout(sw.ctx, job.timeout)
	pr := &probing{s: sw.s, ctx: sw.callCtx, pctx: pctx, start: start, target: t, icmp: job.icmp}
	conn := pr.connect()
	resp := pr.resp
	var sum *netprobev1.FetchSummary
	if conn != nil {
		var tp *tlsParams
		if job.tls != nil {
			copied := *job.tls
			if copied.serverName == "" && !t.literal.IsValid() {
				// An expanded SRV entry names its own host.
				copied.serverName = t.host
			}
			tp = &copied
		}
		switch {
		case len(job.steps) > 0:
			sum = sw.dialogue(pctx, conn, job, t, tp, start)
		case tp != nil:
			_, resp.Tls, resp.Error = handshake(pctx, conn, tp, t, start)
		}
		conn.Close()
	}
	elapsed := time.Since(start)
	resp.TotalDuration = durationpb.New(elapsed)
	failure := resp.Error
	if sum != nil {
		sum.TotalDuration = resp.TotalDuration
		if sum.Error != nil {
			failure = sum.Error
		}
	}
	markCut(pctx, failure)
	cancel()
	// The trace comes after the connection is closed, with the probe's
	// place still held.
	resp.Path = sw.trace(pr, job.trace, resp, failure)
	sw.s.observe(sw.callCtx, Report{Method: "Sweep", Target: asked, Connect: resp, Summary: sum, Error: failure, Path: resp.Path, Duration: elapsed})
	// A probe that failed as the sweep ended was cut short by it; one that
	// worked is a result whenever it came.
	return &netprobev1.SweepResponse{Index: job.index, Target: asked, Connect: resp, Summary: sum, Abandoned: failure != nil && sw.over()}
}

// trace traces a probe's path when its entry asks for it then, as
// Connect's are (a dialogue's failure counts as the probe's), within the
// sweep's budget and its cap of traces.
func (sw *sweep) trace(pr *probing, tp *traceParams, resp *netprobev1.ConnectResponse, failure *netprobev1.ProbeError) *netprobev1.Path {
	dst, ok := traceDestination(resp)
	if tp == nil || failure == nil && !tp.always || !ok {
		return nil
	}
	if sw.traces.Add(-1) < 0 {
		return &netprobev1.Path{
			Destination: dst.String(),
			End:         netprobev1.PathEnd_PATH_END_ERROR,
			Error: &netprobev1.ProbeError{
				Stage:   netprobev1.Stage_STAGE_POLICY,
				Reason:  netprobev1.Reason_REASON_LIMIT,
				Message: fmt.Sprintf("not traced: a sweep runs at most %d traces", maxSweepTraces),
			},
		}
	}
	return pr.tracePath(sw.ctx, tp, resp, failure)
}

// sweepDialogueBytes caps what a sweep's dialogue reads.
const sweepDialogueBytes = expectWindow

// dialogue runs an entry's steps over conn and says how they went. Nothing
// the peer sends goes to the caller.
func (sw *sweep) dialogue(ctx context.Context, conn net.Conn, job sweepJob, t target, tp *tlsParams, start time.Time) *netprobev1.FetchSummary {
	sum := &netprobev1.FetchSummary{}
	deadline, _ := ctx.Deadline()
	// A Cut, or a caller who left, ends the dialogue at once: the deadline
	// alone would let it wait out its timeout, past the drain's grace.
	stop := context.AfterFunc(ctx, func() {
		if !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			conn.Close()
		}
	})
	defer stop()
	f := &fetch{fetchParams: &fetchParams{target: t, maxBytes: sweepDialogueBytes, tls: tp, steps: job.steps}, ctx: ctx, conn: conn, emit: discard, start: start, deadline: deadline, sum: sum}
	if err := f.conn.SetDeadline(deadline); err == nil {
		if matched, _ := f.dialogue(); matched {
			sum.EndReason = netprobev1.EndReason_END_REASON_MATCHED
		}
	} else {
		f.fail(netprobev1.Stage_STAGE_SEND, err)
	}
	if sum.Error != nil {
		sum.EndReason = netprobev1.EndReason_END_REASON_ERROR
	}
	sum.TcpInfo = tcpInfo(f.conn)
	return sum
}

// expand turns an entry into the targets to probe.
func (s *Server) expand(ctx context.Context, job sweepJob) ([]target, *netprobev1.ProbeError) {
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, job.timeout)
	defer cancel()
	switch job.expand {
	case netprobev1.Expand_EXPAND_ADDRESSES:
		addrs, err := s.resolve(rctx, job.target)
		if err != nil {
			return nil, probeError(netprobev1.Stage_STAGE_RESOLVE, job.target.host, err, time.Since(start))
		}
		out := make([]target, len(addrs))
		for i, a := range addrs {
			out[i] = job.target
			out[i].host, out[i].literal = a.String(), a
		}
		return out, nil
	case netprobev1.Expand_EXPAND_SRV:
		_, srvs, err := s.cfg.Resolver.LookupSRV(rctx, "", "", job.target.host)
		if err != nil {
			return nil, probeError(netprobev1.Stage_STAGE_RESOLVE, job.target.host, s.dnsError(err), time.Since(start))
		}
		out := make([]target, len(srvs))
		for i, srv := range srvs {
			out[i] = job.target
			out[i].host = trimDot(srv.Target)
			out[i].literal, _ = netip.ParseAddr(out[i].host)
			out[i].port = srv.Port
		}
		return out, nil
	}
	return []target{job.target}, nil
}

func trimDot(name string) string {
	if n := len(name); n > 0 && name[n-1] == '.' {
		return name[:n-1]
	}
	return name
}

// targetProto is t as a Target, for a result: the host and port probed,
// with the asked network and family.
func targetProto(t target, asked *netprobev1.Target) *netprobev1.Target {
	out := &netprobev1.Target{Host: t.host, Port: uint32(t.port), Service: t.service, Network: asked.GetNetwork(), IpFamily: asked.GetIpFamily()}
	if t.port != 0 {
		out.Service = ""
	}
	return out
}
