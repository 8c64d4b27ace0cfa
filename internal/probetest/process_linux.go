package probetest

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// RSS returns the resident set size of process pid, in bytes.
func RSS(pid int) (int64, error) { return status(pid, "VmRSS") }

// PeakRSS returns the most process pid has had resident since it started
// (or since its peak was last reset), in bytes: what an attack made it
// hold at its height, which RSS read after the attack can miss.
func PeakRSS(pid int) (int64, error) { return status(pid, "VmHWM") }

// status reads a size in kB from /proc/PID/status, in bytes.
func status(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kib << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}
