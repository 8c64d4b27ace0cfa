//go:build !unix

package service

import (
	"errors"
	"net/netip"
	"syscall"
)

// readable reports data waiting at once: without a way to peek, the read
// itself waits, holding its buffer.
func (r *pooledReader) readable(uintptr) bool { return true }

// pendingError is nil: there is no SO_ERROR to read here.
func pendingError(syscall.Conn) error { return nil }

// errnoName is "": only Unix errno names are known.
func errnoName(syscall.Errno) string { return "" }

// bindSource refuses: binding a source address is done on Unix only.
func bindSource(syscall.RawConn, netip.Addr) error {
	return errors.New("binding a source address is not supported on this system")
}
