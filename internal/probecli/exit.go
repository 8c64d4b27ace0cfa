package probecli

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/netprobe/netprobe/client"
)

// The exit codes. Where curl has a code for the same failure, it is curl's.
const (
	exitOK          = 0
	exitOther       = 1
	exitUsage       = 2
	exitNoService   = 3
	exitResolve     = 6
	exitConnect     = 7
	exitExpect      = 8
	exitSweepFailed = 10
	exitTimeout     = 28
	exitTLS         = 35
	exitEmpty       = 52
	exitCertificate = 60
	exitSend        = 55
	exitReceive     = 56
	exitUnavailable = 69
	exitRejected    = 77
	exitInterrupted = 130
)

// exitCodes documents the codes, for --help and docs/cli.md (TestExitCodeTable).
var exitCodes = []struct {
	code int
	text string
}{
	{exitOK, "success: the probe ran and the target answered; trace: the path reached the\n       target (its SYN-ACK, or its RST); ping: any echo was answered (as ping's 0)"},
	{exitOther, "any other failure; trace: the connect reached the target but the trace did\n       not (--max-hops, --timeout). A trace that did not reach it after a failed\n       connect exits as the connect's failure does (7, 28, ...)"},
	{exitUsage, "bad usage: an unknown command or flag, wrong arguments, conflicting flags, a bad\n       value (a PORT out of range, a PROTOCOL other than tcp and udp, a request the\n       server finds invalid)"},
	{exitNoService, "no such service: the SERVICE given for PORT, or to resolve (stage SERVICE_LOOKUP)"},
	{exitResolve, "the host name did not resolve (stage RESOLVE; curl's 6)"},
	{exitConnect, "the connection failed: refused, unreachable, no socket (stages SOCKET, CONNECT;\n       curl's 7); ping: no echo was answered, the last for an ICMP unreachable\n       (stage ECHO) or a socket the system denies"},
	{exitExpect, "the target did not answer as --expect said, or refused --starttls (stage EXPECT;\n       curl's 8, a weird server reply)"},
	{exitSweepFailed, "sweep: some probe failed, or a probe server could not be asked; with --from,\n       a node failed as a whole (without --quorum) or a target was reached from\n       fewer than --quorum nodes; a summary line says how many"},
	{exitTimeout, "a stage timed out (reason TIMEOUT; curl's 28)"},
	{exitTLS, "the TLS handshake failed: no version or cipher in common, an alert (stage\n       TLS_HANDSHAKE; curl's 35)"},
	{exitEmpty, "fetch --fail-empty: the target sent nothing before it closed (curl's 52)"},
	{exitSend, "sending or half-closing failed (stages SEND, SHUTDOWN; curl's 55)"},
	{exitReceive, "receiving failed (stage RECEIVE; curl's 56)"},
	{exitCertificate, "the target's certificate did not verify: expired, not yet valid, unknown\n       authority, another name (stage TLS_HANDSHAKE; curl's 60)"},
	{exitUnavailable, "the probe server could not be reached (or serves TLS, and the call was plaintext)\n       or did not answer in time, is not SERVING, or cut the probe short as it\n       shut down (reason SERVER_SHUTDOWN)"},
	{exitRejected, "the probe server refused or failed the call (target policy, authentication:\n       a token, or a client certificate it requires; limits, internal error)"},
	{exitInterrupted, "interrupted (SIGINT, SIGTERM)"},
}

// exitCodeHelp is the table of exit codes, as --help shows it.
func exitCodeHelp() string {
	var b strings.Builder
	b.WriteString("Exit codes:\n")
	for _, e := range exitCodes {
		fmt.Fprintf(&b, "  %3d  %s\n", e.code, e.text)
	}
	return b.String()
}

// usageError is a command line the CLI cannot run.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitError ends the run with code after its message.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// exitCode maps an error to the exit code that classifies it.
func exitCode(err error) int {
	var (
		pe    *client.ProbeError
		usage usageError
		exit  exitError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &usage):
		return exitUsage
	case errors.As(err, &exit):
		return exit.code
	case errors.As(err, &pe):
		return probeExitCode(pe)
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.InvalidArgument:
			return exitUsage
		case codes.Canceled:
			return exitInterrupted
		case codes.Unavailable, codes.DeadlineExceeded:
			return exitUnavailable
		}
		return exitRejected
	}
	return exitOther
}

// probeExitCode maps a failed probe: a timeout is 28 at any stage; any
// other failure takes its stage's code.
func probeExitCode(pe *client.ProbeError) int {
	switch pe.Reason {
	case client.ReasonTimeout:
		return exitTimeout
	case client.ReasonServerShutdown:
		return exitUnavailable
	case client.ReasonLimit:
		return exitRejected
	}
	switch pe.Stage {
	case client.StageServiceLookup:
		return exitNoService
	case client.StageResolve:
		return exitResolve
	case client.StageSocket, client.StageConnect, client.StageEcho:
		return exitConnect
	case client.StageSend, client.StageShutdown:
		return exitSend
	case client.StageReceive:
		return exitReceive
	case client.StageExpect:
		return exitExpect
	case client.StageTLSHandshake:
		switch pe.Reason {
		case client.ReasonCertificateExpired, client.ReasonCertificateNotYet, client.ReasonUnknownAuthority, client.ReasonHostnameMismatch:
			return exitCertificate
		}
		return exitTLS
	}
	return exitOther
}
