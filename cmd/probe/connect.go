package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/netprobe/netprobe/client"
)

func (a *app) connectCommand() *cobra.Command {
	var (
		tf      targetFlags
		reverse bool
	)
	cmd := &cobra.Command{
		Use:   "connect HOST PORT|SERVICE",
		Short: "Connect to a target and report the addresses and timings",
		Long: `connect resolves HOST, connects to PORT (or the port of SERVICE, such as
"https") on each address in turn, Happy Eyeballs style, and reports where it
connected and how long each phase took. The connection is closed at once.`,
		Example: `  probe connect localhost 22
  probe connect -6 example.com https -o json
  probe --server probed.internal:7070 connect db.internal 5432`,
		Args: positional(2, 2, "HOST PORT|SERVICE"),
		RunE: a.command(func(ctx context.Context, c *client.Client, args []string) error {
			addr, err := address(args[0], args[1])
			if err != nil {
				return err
			}
			res, err := c.Connect(ctx, tf.network(), addr, client.ConnectOptions{Timeout: a.timeout, ReverseLookup: reverse})
			if res != nil {
				if a.output == "json" {
					if err := writeJSON(a.out, res.Proto()); err != nil {
						return err
					}
				} else {
					printConnect(a.out, args[0], res)
				}
			}
			return unknownPort(err, args[1])
		}),
	}
	tf.register(cmd)
	cmd.Flags().BoolVarP(&reverse, "reverse", "r", false, "look the peer address up by address (PTR) once connected")
	return cmd
}

// unknownPort makes a service lookup failure of a connect or fetch a usage
// error: the PORT argument named no service the server knows.
func unknownPort(err error, port string) error {
	var pe *client.ProbeError
	if errors.As(err, &pe) && pe.Stage == client.StageServiceLookup {
		return usageError{fmt.Errorf("PORT %q is no port number and no service the probe server knows: %w", port, err)}
	}
	return err
}
