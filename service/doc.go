// Package service implements netprobe.v1.ProbeService on the standard
// library's net.Dialer and net.Resolver.
//
// A probe that ran is a result: the handlers return OK with a ProbeError in
// the response when the target failed, and keep gRPC status errors for
// requests they refuse (INVALID_ARGUMENT, with a google.rpc.BadRequest naming
// each bad field) and for callers that gave up (CANCELED, DEADLINE_EXCEEDED).
// Network errors are read in one place, classify.go, by type and value.
//
// # The stack of a waiting probe
//
// A probe waiting on the network (a dial, a read) holds its goroutine's
// whole stack, and a server holds thousands of them: past 8 KiB the runtime
// doubles a stack to 16 KiB. The frames from the gRPC handler down to the
// wait must stay under that (TestHeldProbeStacks in cmd/probed fails at 16
// KiB; go run ./bench -only inflight measures it). So what a probe's phases
// share lives in one probing, allocated once, and each phase is a method
// of it; what is needed only after the wait (the handshake, the report,
// the exchange) is in a function of its own, whose frame is not on the
// stack while the dial waits; and every attempt shares one net.Dialer.
package service
