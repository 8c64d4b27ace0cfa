package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/netprobe/netprobe/client"
)

func (a *app) healthCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Ask the probe server whether it is serving probes",
		Long: `health runs the standard gRPC health check for netprobe.v1.ProbeService and
prints the status. It exits 0 when the server is SERVING, 69 otherwise
(NOT_SERVING while it drains, or unreachable).`,
		Args: cobra.NoArgs,
		RunE: a.command(func(ctx context.Context, c *client.Client, _ []string) error {
			st, err := c.Health(ctx)
			if err != nil {
				return err
			}
			if a.output == "json" {
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
		}),
	}
}
