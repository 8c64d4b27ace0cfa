//go:build !linux

package service

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// run sends no echo: only Linux probe servers send them (the datagram
// sockets, the error queue that brings back an ICMP error, and the raw
// fallback are Linux's), and an echo that seems to fail for want of them
// would be a false alarm.
func (e *echo) run(context.Context) echoReport {
	return echoReport{err: &netprobev1.ProbeError{
		Stage:   netprobev1.Stage_STAGE_SOCKET,
		Reason:  netprobev1.Reason_REASON_OTHER,
		Address: e.dst.String(),
		Message: "ICMP echo is sent by probe servers on Linux only",
		Elapsed: durationpb.New(time.Since(e.start)),
	}}
}

// CheckEcho reports that this system's probe servers send no ICMP echo.
func CheckEcho() error {
	return errors.New("ICMP echo is sent by probe servers on Linux only")
}
