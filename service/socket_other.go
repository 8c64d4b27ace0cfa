//go:build !unix

package service

import "syscall"

// readable reports data waiting at once: without a way to peek, the read
// itself waits, holding its buffer.
func (r *pooledReader) readable(uintptr) bool { return true }

// pendingError is nil: there is no SO_ERROR to read here.
func pendingError(syscall.Conn) error { return nil }

// errnoName is "": only Unix errno names are known.
func errnoName(syscall.Errno) string { return "" }
