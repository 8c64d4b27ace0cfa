package service

import (
	"context"
	"runtime/trace"
)

// MarkCategory is the execution tracer's log category (runtime/trace) of
// the points a call passes on its handler's goroutine. go run ./bench
// -only latency takes a trace of probed and reads the time from each
// point to the next as the time of a phase: how a lone probe's time is
// spent.
const MarkCategory = "netprobe"

// The points, in the order a Connect passes them. A health check passes
// MarkCall, MarkAdmitted and MarkReplied.
const (
	// MarkCall: an admitted unary call's handler begins; its request is
	// not read yet (internal/server's guard).
	MarkCall = "call"
	// MarkAdmitted: the call is within the rate and in-flight limits.
	MarkAdmitted = "admitted"
	// MarkHandler: the service's handler begins, its request read and the
	// interceptors passed.
	MarkHandler = "handler"
	// MarkValidated: the request is checked.
	MarkValidated = "validated"
	// MarkDialed: the probe's context is made, the target's addresses
	// known (at once for an IP literal), the policy has checked them and
	// the dial is over.
	MarkDialed = "dialed"
	// MarkReported: the connect phase's report is made: the attempts,
	// TCP_INFO.
	MarkReported = "reported"
	// MarkClosed: the probe's connection is closed.
	MarkClosed = "closed"
	// MarkObserved: the probe's end is told: the audit line, the metrics,
	// the page's ring.
	MarkObserved = "observed"
	// MarkReplied: the handler returns its reply (or error) to gRPC, which
	// encodes and sends it.
	MarkReplied = "replied"
)

// Mark records in the execution trace, when one is being taken, that the
// goroutine of ctx's call reached point. It keeps nothing on the stack
// across a wait, as a region would (see doc.go), and costs an atomic
// load when no trace is being taken.
func Mark(ctx context.Context, point string) {
	if trace.IsEnabled() {
		trace.Log(ctx, MarkCategory, point)
	}
}
