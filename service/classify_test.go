//go:build unix

package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/policy"
)

// alert stands for crypto/tls's unexported alert type: a uint8 that is an
// error.
type alert uint8

func (a alert) Error() string { return fmt.Sprintf("alert %d", uint8(a)) }

// timeoutError is a net.Error that timed out, and says so only that way.
type timeoutError struct{}

func (timeoutError) Error() string   { return "slow" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return false }

// dial wraps errno as a failed connect does.
func dial(errno syscall.Errno) error {
	return &net.OpError{Op: "dial", Net: "tcp4", Err: os.NewSyscallError("connect", errno)}
}

// TestClassify pins classify's reading of errors, made here as the
// network makes them, and its precedence: a policy refusal, then TLS
// verification and alerts, then the errno, then DNS, then timeouts.
func TestClassify(t *testing.T) {
	expired := &x509.Certificate{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}
	early := &x509.Certificate{NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)}
	denied := &policy.Denied{Addr: netip.MustParseAddrPort("127.0.0.2:80"), Rule: "127.0.0.2"}
	for _, tc := range []struct {
		name   string
		err    error
		reason netprobev1.Reason
		errno  string
	}{
		{"refused", dial(syscall.ECONNREFUSED), netprobev1.Reason_REASON_REFUSED, "ECONNREFUSED"},
		{"reset on read", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, netprobev1.Reason_REASON_RESET, "ECONNRESET"},
		{"host unreachable", dial(syscall.EHOSTUNREACH), netprobev1.Reason_REASON_HOST_UNREACHABLE, "EHOSTUNREACH"},
		{"network unreachable", dial(syscall.ENETUNREACH), netprobev1.Reason_REASON_NETWORK_UNREACHABLE, "ENETUNREACH"},
		{"broken pipe", &net.OpError{Op: "write", Err: os.NewSyscallError("write", syscall.EPIPE)}, netprobev1.Reason_REASON_BROKEN_PIPE, "EPIPE"},
		{"out of descriptors", os.NewSyscallError("socket", syscall.EMFILE), netprobev1.Reason_REASON_TOO_MANY_OPEN_FILES, "EMFILE"},
		{"out of descriptors, system-wide", os.NewSyscallError("socket", syscall.ENFILE), netprobev1.Reason_REASON_TOO_MANY_OPEN_FILES, "ENFILE"},
		{"the kernel's timeout", dial(syscall.ETIMEDOUT), netprobev1.Reason_REASON_TIMEOUT, "ETIMEDOUT"},
		{"prohibited", dial(syscall.EACCES), netprobev1.Reason_REASON_PROHIBITED, "EACCES"},
		{"own firewall", dial(syscall.EPERM), netprobev1.Reason_REASON_PROHIBITED, "EPERM"},
		{"another errno, by name", dial(syscall.EADDRNOTAVAIL), netprobev1.Reason_REASON_OTHER, "EADDRNOTAVAIL"},
		{"no such host", &net.DNSError{Name: "x.test", IsNotFound: true}, netprobev1.Reason_REASON_NO_SUCH_HOST, ""},
		{"DNS timeout", &net.DNSError{Name: "x.test", IsTimeout: true}, netprobev1.Reason_REASON_TIMEOUT, ""},
		{"SERVFAIL", &net.DNSError{Name: "x.test", IsTemporary: true}, netprobev1.Reason_REASON_TEMPORARY_DNS_FAILURE, ""},
		{"another DNS error", &net.DNSError{Name: "x.test"}, netprobev1.Reason_REASON_OTHER, ""},
		{"a DNS error's errno first", &net.DNSError{Name: "x.test", IsTemporary: true, UnwrapErr: syscall.ECONNREFUSED}, netprobev1.Reason_REASON_REFUSED, "ECONNREFUSED"},
		{"a deadline", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, netprobev1.Reason_REASON_TIMEOUT, ""},
		{"a wrapped deadline", fmt.Errorf("expect: %w", fmt.Errorf("read: %w", os.ErrDeadlineExceeded)), netprobev1.Reason_REASON_TIMEOUT, ""},
		{"the context's deadline", fmt.Errorf("resolve: %w", context.DeadlineExceeded), netprobev1.Reason_REASON_TIMEOUT, ""},
		{"a net.Error timeout", fmt.Errorf("x: %w", timeoutError{}), netprobev1.Reason_REASON_TIMEOUT, ""},
		{"expired", x509.CertificateInvalidError{Cert: expired, Reason: x509.Expired}, netprobev1.Reason_REASON_CERTIFICATE_EXPIRED, ""},
		{"not yet valid", x509.CertificateInvalidError{Cert: early, Reason: x509.Expired}, netprobev1.Reason_REASON_CERTIFICATE_NOT_YET_VALID, ""},
		{"unknown authority", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, netprobev1.Reason_REASON_UNKNOWN_AUTHORITY, ""},
		{"another name", x509.HostnameError{Certificate: expired, Host: "x.test"}, netprobev1.Reason_REASON_HOSTNAME_MISMATCH, ""},
		// Linux makes an ICMP time exceeded EHOSTUNREACH; the echo says
		// what it was.
		{"TTL exceeded", fmt.Errorf("echo to 198.18.4.1: ICMP type 11 code 0 from 198.18.2.1: %w", errTTLExceeded), netprobev1.Reason_REASON_TTL_EXCEEDED, ""},
		{"not TLS", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, netprobev1.Reason_REASON_NOT_TLS, ""},
		{"protocol_version alert", &net.OpError{Op: "remote error", Err: alert(70)}, netprobev1.Reason_REASON_PROTOCOL_VERSION, ""},
		{"certificate_required alert", &net.OpError{Op: "remote error", Err: alert(116)}, netprobev1.Reason_REASON_HANDSHAKE_FAILURE, ""},
		{"a local error is no alert", &net.OpError{Op: "local error", Err: alert(70)}, netprobev1.Reason_REASON_OTHER, ""},
		{"policy before the errno", fmt.Errorf("%w (%w)", denied, syscall.ECONNREFUSED), netprobev1.Reason_REASON_DENIED, ""},
		{"TLS before the errno", errors.Join(x509.UnknownAuthorityError{}, syscall.ECONNRESET), netprobev1.Reason_REASON_UNKNOWN_AUTHORITY, ""},
		{"the errno before DNS", errors.Join(&net.DNSError{IsNotFound: true}, syscall.ECONNREFUSED), netprobev1.Reason_REASON_REFUSED, "ECONNREFUSED"},
		{"the errno before a timeout", errors.Join(os.ErrDeadlineExceeded, syscall.ECONNRESET), netprobev1.Reason_REASON_RESET, "ECONNRESET"},
		{"anything else", errors.New("something"), netprobev1.Reason_REASON_OTHER, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if reason, errno := classify(tc.err); reason != tc.reason || errno != tc.errno {
				t.Errorf("classify(%v) = %v, %q; want %v, %q", tc.err, reason, errno, tc.reason, tc.errno)
			}
		})
	}
}
