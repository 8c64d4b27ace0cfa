package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/policy"
)

// errnoReasons maps the errnos that have a reason of their own. Any other
// errno is REASON_OTHER, still reported by name.
var errnoReasons = map[syscall.Errno]netprobev1.Reason{
	syscall.ECONNREFUSED: netprobev1.Reason_REASON_REFUSED,
	syscall.ECONNRESET:   netprobev1.Reason_REASON_RESET,
	syscall.EHOSTUNREACH: netprobev1.Reason_REASON_HOST_UNREACHABLE,
	syscall.ENETUNREACH:  netprobev1.Reason_REASON_NETWORK_UNREACHABLE,
	syscall.EPIPE:        netprobev1.Reason_REASON_BROKEN_PIPE,
	syscall.EMFILE:       netprobev1.Reason_REASON_TOO_MANY_OPEN_FILES,
	syscall.ENFILE:       netprobev1.Reason_REASON_TOO_MANY_OPEN_FILES,
	syscall.ETIMEDOUT:    netprobev1.Reason_REASON_TIMEOUT,
	syscall.EACCES:       netprobev1.Reason_REASON_PROHIBITED,
	syscall.EPERM:        netprobev1.Reason_REASON_PROHIBITED,
}

// classify is the one place that reads network errors. It looks only at
// error types and values: a policy refusal, the errno (it is the most
// precise, and a DNS error can wrap one), then DNS errors, then timeouts.
func classify(err error) (netprobev1.Reason, string) {
	var denied *policy.Denied
	if errors.As(err, &denied) {
		return netprobev1.Reason_REASON_DENIED, ""
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if r, ok := errnoReasons[errno]; ok {
			return r, unix.ErrnoName(errno)
		}
		return netprobev1.Reason_REASON_OTHER, unix.ErrnoName(errno)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		switch {
		case dnsErr.IsNotFound:
			return netprobev1.Reason_REASON_NO_SUCH_HOST, ""
		case dnsErr.IsTimeout:
			return netprobev1.Reason_REASON_TIMEOUT, ""
		case dnsErr.IsTemporary:
			return netprobev1.Reason_REASON_TEMPORARY_DNS_FAILURE, ""
		}
		return netprobev1.Reason_REASON_OTHER, ""
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return netprobev1.Reason_REASON_TIMEOUT, ""
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return netprobev1.Reason_REASON_TIMEOUT, ""
	}
	return netprobev1.Reason_REASON_OTHER, ""
}

// probeError builds the ProbeError for err at stage, which struck elapsed
// after the probe began.
func probeError(stage netprobev1.Stage, address string, err error, elapsed time.Duration) *netprobev1.ProbeError {
	reason, errno := classify(err)
	pe := &netprobev1.ProbeError{
		Stage:   stage,
		Reason:  reason,
		Errno:   errno,
		Address: address,
		Message: err.Error(),
		Elapsed: durationpb.New(elapsed),
	}
	var denied *policy.Denied
	if errors.As(err, &denied) {
		// The dial error around it only repeats the address.
		pe.Message = denied.Error()
		pe.Rule = denied.Rule
	}
	return pe
}

// unknownService is the ProbeError for a service name (or port) that no
// services database knows on protocol.
func unknownService(service, protocol string, start time.Time) *netprobev1.ProbeError {
	return &netprobev1.ProbeError{
		Stage:   netprobev1.Stage_STAGE_SERVICE_LOOKUP,
		Reason:  netprobev1.Reason_REASON_UNKNOWN_SERVICE,
		Address: service,
		Message: fmt.Sprintf("unknown service %s/%s", service, protocol),
		Elapsed: durationpb.New(time.Since(start)),
	}
}
