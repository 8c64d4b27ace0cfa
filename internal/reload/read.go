package reload

import (
	"fmt"
	"io"
	"os"
)

// MaxFileBytes bounds each file probed reads: a module file of thousands
// of modules is a few MB.
const MaxFileBytes = 16 << 20

// ReadFile reads a file probed reads, refusing what is not a regular file
// (a FIFO, whose reader waits for a writer that may never come, or a
// device such as /dev/zero, which never ends) and one over MaxFileBytes.
// Its errors name the path.
func ReadFile(path string) ([]byte, error) {
	f, err := openNonblocking(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := regular(path, fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("%s: over %d bytes", path, MaxFileBytes)
	}
	return b, nil
}

// check makes the tests ReadFile makes on a file that another package
// reads itself (crypto/tls a certificate, exporter-toolkit the web
// configuration), before it does.
func check(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return regular(path, fi)
}

// regular refuses what is not a regular file, or is over MaxFileBytes.
func regular(path string, fi os.FileInfo) error {
	switch {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s: not a regular file but %s", path, kind(fi.Mode()))
	case fi.Size() > MaxFileBytes:
		return fmt.Errorf("%s: %d bytes, over %d", path, fi.Size(), MaxFileBytes)
	}
	return nil
}

// kind names what a file that is not a regular one is.
func kind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "a special file"
}
