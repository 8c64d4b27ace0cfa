package client

import (
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// Stage is the phase of a probe where it failed.
type Stage = netprobev1.Stage

// The stages, in the order a probe runs them.
const (
	StageServiceLookup = netprobev1.Stage_STAGE_SERVICE_LOOKUP
	StageResolve       = netprobev1.Stage_STAGE_RESOLVE
	StageSocket        = netprobev1.Stage_STAGE_SOCKET
	StageConnect       = netprobev1.Stage_STAGE_CONNECT
	StageSend          = netprobev1.Stage_STAGE_SEND
	StageShutdown      = netprobev1.Stage_STAGE_SHUTDOWN
	StageReceive       = netprobev1.Stage_STAGE_RECEIVE
	StageReverseLookup = netprobev1.Stage_STAGE_REVERSE_LOOKUP
	StagePolicy        = netprobev1.Stage_STAGE_POLICY
	StageTLSHandshake  = netprobev1.Stage_STAGE_TLS_HANDSHAKE
	StageExpect        = netprobev1.Stage_STAGE_EXPECT
	StageEcho          = netprobev1.Stage_STAGE_ECHO
)

// Reason says why a stage failed.
type Reason = netprobev1.Reason

// The reasons; see the proto for each one's meaning.
const (
	ReasonTimeout             = netprobev1.Reason_REASON_TIMEOUT
	ReasonRefused             = netprobev1.Reason_REASON_REFUSED
	ReasonReset               = netprobev1.Reason_REASON_RESET
	ReasonHostUnreachable     = netprobev1.Reason_REASON_HOST_UNREACHABLE
	ReasonNetworkUnreachable  = netprobev1.Reason_REASON_NETWORK_UNREACHABLE
	ReasonNoSuchHost          = netprobev1.Reason_REASON_NO_SUCH_HOST
	ReasonTemporaryDNSFailure = netprobev1.Reason_REASON_TEMPORARY_DNS_FAILURE
	ReasonUnknownService      = netprobev1.Reason_REASON_UNKNOWN_SERVICE
	ReasonBrokenPipe          = netprobev1.Reason_REASON_BROKEN_PIPE
	ReasonTooManyOpenFiles    = netprobev1.Reason_REASON_TOO_MANY_OPEN_FILES
	ReasonOther               = netprobev1.Reason_REASON_OTHER
	ReasonProhibited          = netprobev1.Reason_REASON_PROHIBITED
	ReasonDenied              = netprobev1.Reason_REASON_DENIED
	ReasonCertificateExpired  = netprobev1.Reason_REASON_CERTIFICATE_EXPIRED
	ReasonCertificateNotYet   = netprobev1.Reason_REASON_CERTIFICATE_NOT_YET_VALID
	ReasonUnknownAuthority    = netprobev1.Reason_REASON_UNKNOWN_AUTHORITY
	ReasonHostnameMismatch    = netprobev1.Reason_REASON_HOSTNAME_MISMATCH
	ReasonHandshakeFailure    = netprobev1.Reason_REASON_HANDSHAKE_FAILURE
	ReasonProtocolVersion     = netprobev1.Reason_REASON_PROTOCOL_VERSION
	ReasonLimit               = netprobev1.Reason_REASON_LIMIT
	ReasonServerShutdown      = netprobev1.Reason_REASON_SERVER_SHUTDOWN
	ReasonNoMatch             = netprobev1.Reason_REASON_NO_MATCH
	ReasonNotTLS              = netprobev1.Reason_REASON_NOT_TLS
	ReasonTTLExceeded         = netprobev1.Reason_REASON_TTL_EXCEEDED
)

// reasonText describes the reasons that are not errnos' own words.
var reasonText = map[Reason]string{
	ReasonTimeout:             "timed out",
	ReasonNoSuchHost:          "no such host",
	ReasonTemporaryDNSFailure: "temporary DNS failure",
	ReasonUnknownService:      "unknown service",
	ReasonDenied:              "denied by the target policy",
	ReasonCertificateExpired:  "certificate expired",
	ReasonCertificateNotYet:   "certificate not yet valid",
	ReasonUnknownAuthority:    "certificate signed by an unknown authority",
	ReasonHostnameMismatch:    "certificate is not for this name",
	ReasonHandshakeFailure:    "TLS handshake failure",
	ReasonProtocolVersion:     "no TLS version in common",
	ReasonServerShutdown:      "cut short: the probe server is shutting down",
	ReasonNotTLS:              "the peer does not speak TLS",
	ReasonTTLExceeded:         "time to live exceeded in transit",
}

// ProbeError is a probe that ran on the server and failed: the target, not
// the probe server, is what went wrong.
type ProbeError struct {
	// Stage is where the probe failed, Reason why.
	Stage  Stage
	Reason Reason
	// Errno is the symbolic errno on the server ("ECONNREFUSED"), or "".
	Errno string
	// Address is what the failing stage worked on: "ip:port" for a
	// connection, the host name for a resolve, the service name for a
	// service lookup.
	Address string
	// Message is the server's error text, for people.
	Message string
	// Elapsed is how long after the probe began it failed.
	Elapsed time.Duration
	// Rule is the policy rule that refused the address (StagePolicy).
	Rule string
	// Step is the index in FetchOptions.Steps of the step that failed;
	// -1 when no step did.
	Step int
	// Connect is the report of the connect phase as far as it went, with
	// its timings and every address tried; nil for ResolveService.
	Connect *ConnectResult
	// Summary is a failed Fetch's summary (bytes sent and received, time to
	// first byte); nil unless the failure came after connecting.
	Summary *FetchSummary
	// Path is the network path to the address the probe failed at, when
	// its options asked for a trace and one was made: Connect.Path, or a
	// Fetch's Summary.Path.
	Path *Path
	// ICMP is the ICMP error that came back in answer to the probe's
	// packet (an ICMP echo's unreachable), when one did.
	ICMP *ICMPError
}

// ICMPError is an ICMP (ICMPv6) error message that answered a probe's
// packet.
type ICMPError struct {
	// From is the address that sent it; the zero Addr when unknown.
	From netip.Addr
	// Type and Code are its ICMP (ICMPv6) type and code.
	Type, Code int
}

// newProbeError converts the proto; nil for nil.
func newProbeError(pe *netprobev1.ProbeError) *ProbeError {
	if pe == nil {
		return nil
	}
	return &ProbeError{
		Stage:   pe.GetStage(),
		Reason:  pe.GetReason(),
		Errno:   pe.GetErrno(),
		Address: pe.GetAddress(),
		Message: pe.GetMessage(),
		Elapsed: pe.GetElapsed().AsDuration(),
		Rule:    pe.GetRule(),
		Step:    stepIndex(pe),
		ICMP:    newICMPError(pe.GetIcmp()),
	}
}

func newICMPError(ie *netprobev1.IcmpError) *ICMPError {
	if ie == nil {
		return nil
	}
	from, _ := netip.ParseAddr(ie.GetAddress())
	return &ICMPError{From: from, Type: int(ie.GetIcmpType()), Code: int(ie.GetIcmpCode())}
}

// Error reads like a net error, then gives the codes: "connect
// 127.0.0.1:9: connection refused (stage CONNECT, reason REFUSED, errno
// ECONNREFUSED)".
func (e *ProbeError) Error() string {
	var b strings.Builder
	b.WriteString(strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(e.Stage.String(), "STAGE_")), "_", " "))
	if e.Address != "" {
		b.WriteString(" " + e.Address)
	}
	b.WriteString(": ")
	// An expectation's message quotes what the target sent instead.
	if e.Stage == StageExpect && e.Message != "" {
		b.WriteString(e.Message)
	} else if errno, ok := errnoValue(e.Errno); ok {
		b.WriteString(errno.Error())
	} else if text, ok := reasonText[e.Reason]; ok {
		b.WriteString(text)
		// The alert says what the peer objected to.
		if e.Reason == ReasonHandshakeFailure && e.Message != "" {
			b.WriteString(": " + e.Message)
		}
	} else {
		b.WriteString(e.Message)
	}
	if e.Rule != "" {
		fmt.Fprintf(&b, ", rule %q", e.Rule)
	}
	fmt.Fprintf(&b, " (stage %s, reason %s", strings.TrimPrefix(e.Stage.String(), "STAGE_"), strings.TrimPrefix(e.Reason.String(), "REASON_"))
	if e.Errno != "" {
		b.WriteString(", errno " + e.Errno)
	}
	if e.Step >= 0 {
		fmt.Fprintf(&b, ", step %d", e.Step)
	}
	b.WriteString(")")
	// The address and message are the server's words: a terminal must
	// not act on what a hostile one puts in them.
	return Printable(b.String())
}

// Unwrap returns the errno as a syscall.Errno, so that errors.Is(err,
// syscall.ECONNREFUSED) holds for a probe the target refused. It returns
// nil when there is no errno or this system does not know its name.
func (e *ProbeError) Unwrap() error {
	if errno, ok := errnoValue(e.Errno); ok {
		return errno
	}
	return nil
}

// Timeout reports whether the probe ran out of time, as net.Error does.
func (e *ProbeError) Timeout() bool { return e.Reason == ReasonTimeout }

// errnoValue is the syscall.Errno this system gives the name, if any.
func errnoValue(name string) (syscall.Errno, bool) {
	if name == "" {
		return 0, false
	}
	e, ok := errnos()[name]
	return e, ok
}

// Refusal returns the ProbeError of a call the probe server refused by its
// target policy: a PERMISSION_DENIED status carrying a STAGE_POLICY
// ProbeError, which names the address and the rule. The status error itself
// is what Connect and Fetch return.
func Refusal(err error) (*ProbeError, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.PermissionDenied {
		return nil, false
	}
	for _, d := range st.Details() {
		if pe, ok := d.(*netprobev1.ProbeError); ok {
			return newProbeError(pe), true
		}
	}
	return nil, false
}

// stepIndex is the failed step's index, or -1.
func stepIndex(pe *netprobev1.ProbeError) int {
	if pe.Step == nil {
		return -1
	}
	return int(pe.GetStep())
}
