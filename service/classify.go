package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"syscall"
	"time"

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
// error types and values: a policy refusal, certificate verification
// errors and TLS alerts, the errno (it is the most precise, and a DNS error
// can wrap one), then DNS errors, then timeouts.
func classify(err error) (netprobev1.Reason, string) {
	var denied *policy.Denied
	if errors.As(err, &denied) {
		return netprobev1.Reason_REASON_DENIED, ""
	}
	if r, ok := classifyTLS(err); ok {
		return r, ""
	}
	if errors.Is(err, errTTLExceeded) {
		return netprobev1.Reason_REASON_TTL_EXCEEDED, ""
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if r, ok := errnoReasons[errno]; ok {
			return r, errnoName(errno)
		}
		return netprobev1.Reason_REASON_OTHER, errnoName(errno)
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

// errTTLExceeded is a packet answered by an ICMP time exceeded: its TTL
// ran out on the way. Linux makes it EHOSTUNREACH, which would read as
// no route to the host.
var errTTLExceeded = errors.New("time to live exceeded in transit")

// tlsAlerts maps the TLS alerts a peer ends a handshake with to reasons;
// any other alert is a handshake failure.
var tlsAlerts = map[uint8]netprobev1.Reason{
	70: netprobev1.Reason_REASON_PROTOCOL_VERSION, // protocol_version
}

// PeerAlert returns the TLS alert the peer sent, if err is one. crypto/tls
// reports it as a *net.OpError with Op "remote error" whose Err is the
// alert, of an unexported uint8 type: its number is read by kind, not from
// the message.
func PeerAlert(err error) (uint8, bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" {
		return 0, false
	}
	if v := reflect.ValueOf(op.Err); v.Kind() == reflect.Uint8 {
		return uint8(v.Uint()), true
	}
	return 0, false
}

// classifyTLS reads certificate verification errors and TLS alerts.
func classifyTLS(err error) (netprobev1.Reason, bool) {
	var (
		invalid   x509.CertificateInvalidError
		authority x509.UnknownAuthorityError
		hostname  x509.HostnameError
		record    tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &record):
		// The first bytes back were not a TLS record.
		return netprobev1.Reason_REASON_NOT_TLS, true
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		// Expired covers both ends of the validity window.
		if invalid.Cert != nil && time.Now().Before(invalid.Cert.NotBefore) {
			return netprobev1.Reason_REASON_CERTIFICATE_NOT_YET_VALID, true
		}
		return netprobev1.Reason_REASON_CERTIFICATE_EXPIRED, true
	case errors.As(err, &authority):
		return netprobev1.Reason_REASON_UNKNOWN_AUTHORITY, true
	case errors.As(err, &hostname):
		return netprobev1.Reason_REASON_HOSTNAME_MISMATCH, true
	}
	if alert, ok := PeerAlert(err); ok {
		if r, ok := tlsAlerts[alert]; ok {
			return r, true
		}
		return netprobev1.Reason_REASON_HANDSHAKE_FAILURE, true
	}
	return 0, false
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
