package namespaces

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/proto/rpc"
)

// TestStreamRequired: a streaming call's namespace is its request's field
// when set, validated like any namespace; else the one in ttrpc metadata;
// else the call fails as unary calls without a namespace do.
func TestStreamRequired(t *testing.T) {
	md := rpc.MD{}
	md.Set(TTRPCHeader, "meta")
	withMD := rpc.WithMetadata(context.Background(), md)

	for _, tc := range []struct {
		name    string
		ctx     context.Context
		field   string
		want    string
		wantErr error
		msg     string
	}{
		{"field", withMD, "lab", "lab", nil, ""},
		{"field without metadata", context.Background(), "lab", "lab", nil, ""},
		{"metadata", withMD, "", "meta", nil, ""},
		{"context value", WithNamespace(context.Background(), "local"), "", "local", nil, ""},
		{"none", context.Background(), "", "", errdefs.ErrFailedPrecondition,
			`namespace is required (set it in ttrpc metadata "containerd-namespace-ttrpc")`},
		{"bad field", withMD, "../x", "", errdefs.ErrInvalidArgument, `namespace: "../x" must match`},
		{"bad metadata", rpc.WithMetadata(context.Background(), rpc.MD{TTRPCHeader: {"a/b"}}), "", "", errdefs.ErrInvalidArgument, `namespace: "a/b" must match`},
	} {
		got, err := StreamRequired(tc.ctx, tc.field)
		if tc.wantErr == nil {
			if err != nil || got != tc.want {
				t.Errorf("%s: StreamRequired = %q, %v; want %q", tc.name, got, err, tc.want)
			}
			continue
		}
		if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: StreamRequired = %q, %v; want %v containing %q", tc.name, got, err, tc.wantErr, tc.msg)
		}
	}
}
