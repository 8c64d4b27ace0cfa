package service

import "context"

type callerKey struct{}

// WithCaller returns a context that carries the identity of the caller,
// such as a token's name or a client certificate's subject, set by the
// server's authentication. The target policy applies that caller's rules.
func WithCaller(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, callerKey{}, name)
}

// CallerFrom returns the caller's identity, or "" for an anonymous caller.
func CallerFrom(ctx context.Context) string {
	name, _ := ctx.Value(callerKey{}).(string)
	return name
}
