//go:build !linux

package service

import (
	"context"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
)

// run makes no trace: without privilege, only Linux tells a socket what
// answered its packets (IP_RECVERR), and a path made up of guesses would
// be worse than none.
func (tr *tracer) run(context.Context) *netprobev1.Path {
	return &netprobev1.Path{
		End: netprobev1.PathEnd_PATH_END_UNSUPPORTED,
		Error: &netprobev1.ProbeError{
			Stage:   netprobev1.Stage_STAGE_SOCKET,
			Reason:  netprobev1.Reason_REASON_OTHER,
			Address: tr.dst.String(),
			Message: "tracing needs IP_RECVERR, which only Linux has",
			Elapsed: durationpb.New(0),
		},
	}
}
