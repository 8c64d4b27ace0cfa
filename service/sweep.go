package service

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// defaultSweepConcurrency is a sweep's concurrency when it asks for none.
const defaultSweepConcurrency = 16

// sweepMargin is how long before the call's deadline a sweep stops, so
// that it can still report what it abandoned.
const sweepMargin = 50 * time.Millisecond

// sweepJob is a validated SweepTarget.
type sweepJob struct {
	index   uint32
	target  target
	timeout time.Duration
	expand  netprobev1.Expand
	tls     *tlsParams
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
	for i, st := range req.GetTargets() {
		prefix := fmt.Sprintf("targets[%d].", i)
		var sub violations
		asked := st.GetTarget()
		checked := asked
		if st.GetExpand() == netprobev1.Expand_EXPAND_SRV && asked != nil {
			if asked.GetPort() != 0 || asked.GetService() != "" {
				sub.add("target.port", "an SRV name brings its own ports: leave port and service unset")
			}
			// The SRV records give the port; validate the rest.
			checked = proto.CloneOf(asked)
			checked.Port = 1
		}
		t := validateTarget(&sub, checked)
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
		for _, fv := range sub {
			fv.Field = prefix + fv.Field
			v = append(v, fv)
		}
		jobs = append(jobs, sweepJob{index: uint32(i), target: t, timeout: timeout, expand: st.GetExpand(), tls: tp, asked: asked})
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

// Sweep implements netprobev1.ProbeServiceServer.
func (s *Server) Sweep(req *netprobev1.SweepRequest, stream grpc.ServerStreamingServer[netprobev1.SweepResponse]) error {
	jobs, concurrency, err := s.validateSweep(req)
	if err != nil {
		return err
	}
	ctx := stream.Context()
	// Stop a little before the caller's deadline, to report what is left.
	sctx := ctx
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		sctx, cancel = context.WithDeadline(ctx, d.Add(-min(sweepMargin, time.Until(d)/10)))
		defer cancel()
	}

	queue := make(chan sweepJob)
	results := make(chan *netprobev1.SweepResponse)
	var workers sync.WaitGroup
	for range concurrency {
		workers.Go(func() {
			for job := range queue {
				s.sweepOne(sctx, ctx, job, results)
			}
		})
	}
	go func() {
		defer close(results)
		defer workers.Wait()
		defer close(queue)
		for i, job := range jobs {
			select {
			case queue <- job:
			case <-sctx.Done():
				// Never started: report each as abandoned.
				for _, left := range jobs[i:] {
					results <- &netprobev1.SweepResponse{Index: left.index, Target: left.asked, Abandoned: true}
				}
				return
			}
		}
	}()

	var sendErr error
	for r := range results {
		if sendErr == nil {
			sendErr = stream.Send(r)
		}
	}
	if err := callerGone(ctx); err != nil {
		return err
	}
	return sendErr
}

// sweepOne runs one entry, expanding it first if asked, and sends each
// probe's result. Probes run under sctx, the sweep's budget; callCtx is the
// call's, for the audit report.
func (s *Server) sweepOne(sctx, callCtx context.Context, job sweepJob, results chan<- *netprobev1.SweepResponse) {
	// The sweep is over once its context says so or its deadline has
	// passed, whichever is seen first (callerGone explains why both).
	over := func() bool { return callerGone(sctx) != nil }
	if over() {
		results <- &netprobev1.SweepResponse{Index: job.index, Target: job.asked, Abandoned: true}
		return
	}
	targets, err := s.expand(sctx, job)
	if err != nil {
		results <- &netprobev1.SweepResponse{
			Index:     job.index,
			Target:    job.asked,
			Connect:   &netprobev1.ConnectResponse{Error: err},
			Abandoned: over(),
		}
		return
	}
	for _, t := range targets {
		if over() {
			results <- &netprobev1.SweepResponse{Index: job.index, Target: targetProto(t, job.asked), Abandoned: true}
			continue
		}
		start := time.Now()
		pctx, cancel := context.WithTimeout(sctx, job.timeout)
		conn, resp := s.connect(pctx, t, start)
		if conn != nil {
			if job.tls != nil {
				tp := *job.tls
				if tp.serverName == "" && !t.literal.IsValid() {
					// An expanded SRV entry names its own host.
					tp.serverName = t.host
				}
				_, resp.Tls, resp.Error = handshake(pctx, conn, &tp, t, start)
			}
			conn.Close()
		}
		cancel()
		resp.TotalDuration = durationpb.New(time.Since(start))
		asked := targetProto(t, job.asked)
		s.observe(callCtx, Report{Method: "Sweep", Target: asked, Connect: resp, Error: resp.Error})
		results <- &netprobev1.SweepResponse{Index: job.index, Target: asked, Connect: resp, Abandoned: over()}
	}
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
			return nil, probeError(netprobev1.Stage_STAGE_RESOLVE, job.target.host, err, time.Since(start))
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
