//go:build unix

package service

import (
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// readable peeks a byte without taking it: false (wait) while none is
// there. An error the peek meets (a reset, an ICMP port unreachable) is
// kept for next, since the kernel reports such an error only once.
//
// It calls recvfrom(2) itself, without a source address: unix.Recvfrom
// allocates one on every call, which would be an allocation per chunk.
func (r *pooledReader) readable(fd uintptr) bool {
	_, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&r.peek[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	switch errno {
	case unix.EAGAIN, unix.EINTR:
		return false
	case 0:
		r.peekErr = nil
	default:
		r.peekErr = errno
	}
	return true
}

// pendingError returns the error the kernel holds for the socket (SO_ERROR):
// after a failed shutdown, the reset that closed the connection under it.
func pendingError(c syscall.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var soErr int
	var getErr error
	if err := raw.Control(func(fd uintptr) {
		soErr, getErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
	}); err != nil || getErr != nil || soErr == 0 {
		return nil
	}
	return os.NewSyscallError("getsockopt SO_ERROR", syscall.Errno(soErr))
}

// errnoName is errno's symbolic name, such as ECONNREFUSED.
func errnoName(errno syscall.Errno) string { return unix.ErrnoName(errno) }

// bindSource binds the socket of rc to addr, port 0.
func bindSource(rc syscall.RawConn, addr netip.Addr) error {
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: addr.As16()}
	if addr.Is4() {
		sa = &unix.SockaddrInet4{Addr: addr.As4()}
	}
	var bindErr error
	if err := rc.Control(func(fd uintptr) { bindErr = unix.Bind(int(fd), sa) }); err != nil {
		return err
	}
	return os.NewSyscallError("bind", bindErr)
}
