//go:build !unix

package client

import "syscall"

// errnos is empty where x/sys/unix has no errno names: errors then read
// with the server's message and do not unwrap to a syscall.Errno.
func errnos() map[string]syscall.Errno { return nil }
