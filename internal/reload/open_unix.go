//go:build unix

package reload

import (
	"os"
	"syscall"
)

// openNonblocking opens path for reading without waiting: a FIFO with no
// writer opens at once, to be refused, instead of holding its reader.
func openNonblocking(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
