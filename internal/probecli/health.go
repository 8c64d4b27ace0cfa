package probecli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func (a *app) healthCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Ask the probe server whether it is serving probes",
		Long: `health runs the standard gRPC health check for netprobe.v1.ProbeService and
prints the status. It exits 0 when the server is SERVING, 69 otherwise
(NOT_SERVING while it drains, unreachable, or no answer within
--server-timeout).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a.ran = true
			if len(a.Servers) > 1 {
				return usagef("health asks one probe server; several --server are for sweep")
			}
			c, closeClient, err := a.dialUnchecked()
			if err != nil {
				return err
			}
			defer closeClient()
			ctx, cancel := context.WithTimeout(cmd.Context(), a.ServerTimeout)
			defer cancel()
			st, err := c.Health(ctx)
			if status.Code(err) == codes.DeadlineExceeded && cmd.Context().Err() == nil {
				return status.Errorf(codes.Unavailable, "no answer within --server-timeout %v", a.ServerTimeout)
			}
			if err != nil {
				return a.diagnose(cmd.Context(), err)
			}
			if a.Output == "json" {
				if err := writeJSON(a.out, &healthpb.HealthCheckResponse{Status: st}); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(a.out, st)
			}
			if st != healthpb.HealthCheckResponse_SERVING {
				return exitError{exitUnavailable, fmt.Sprintf("%s is %s", a.serverName(), st)}
			}
			return nil
		},
	}
}
