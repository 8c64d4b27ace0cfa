//go:build !unix

package reload

import "os"

// openNonblocking opens path for reading: where there are no FIFOs to
// wait on, as any open does.
func openNonblocking(path string) (*os.File, error) {
	return os.Open(path)
}
