//go:build unix

package probetest

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestStalls stops the whole process, as a loaded host can, and has
// another process continue it 300 ms later: the watch sees the stall.
func TestStalls(t *testing.T) {
	s := WatchStalls(t)
	cont := exec.Command("sh", "-c", "sleep 0.3; kill -CONT "+strconv.Itoa(os.Getpid()))
	if err := cont.Start(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := cont.Wait(); err != nil {
		t.Fatal(err)
	}
	// The shell's sleep began before the stop, by as long as the shell
	// took to start.
	if got := s.Stop(); got < 200*time.Millisecond || got > Timeout {
		t.Errorf("longest stall %v, want about 300ms", got)
	}
}
