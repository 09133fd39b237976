//go:build !linux

package platforms

func hostArmVariant() string { return "v7" }
