// Package service implements netprobe.v1.ProbeService on the standard
// library's net.Dialer and net.Resolver.
//
// A probe that ran is a result: the handlers return OK with a ProbeError in
// the response when the target failed, and keep gRPC status errors for
// requests they refuse (INVALID_ARGUMENT, with a google.rpc.BadRequest naming
// each bad field) and for callers that gave up (CANCELED, DEADLINE_EXCEEDED).
// Network errors are read in one place, classify.go, by type and value.
package service
