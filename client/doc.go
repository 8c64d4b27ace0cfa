// Package client is the Go client of netprobe's ProbeService: it asks a probe
// server to connect to, or exchange bytes with, a target, and gives back the
// report as plain Go values.
//
// It reads like the standard library's net package. Addresses are
// "host:port", where port may be a service name ("example.com:https"), and
// networks are "tcp", "tcp4", "tcp6", "udp", "udp4" and "udp6". A probe that
// ran and failed comes back as a *ProbeError, the way net.Dial returns a
// *net.OpError: reach it with errors.As and switch on its Stage and Reason.
// Its errno unwraps to a syscall.Errno, so errors.Is(err,
// syscall.ECONNREFUSED) works as it does for a local dial.
//
// Errors that are not *ProbeError are about the call itself: the probe
// server could not be reached, or refused the request. Those are gRPC status
// errors, passed through unchanged for status.Code and status.Convert.
//
// Fetch returns the target's reply as an io.ReadCloser. When the exchange
// fails part-way, Read returns the bytes that did arrive and then the
// *ProbeError instead of io.EOF, so a failure is never taken for the end of
// the reply.
//
// ConnectOptions.Trace (and FetchOptions.Trace, SweepTarget.Trace) also
// asks for the network path to the address probed, hop by hop as
// traceroute finds it, when the probe fails or always: ConnectResult.Path
// (a Fetch's FetchSummary.Path; a failed probe's ProbeError.Path) says
// which routers answered, what, and why the trace stopped.
package client
