package images

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
	"github.com/edged/edged/fsstore/compression"
)

// Media types of Docker schema 2 documents.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
)

func isIndexType(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}

func isManifestType(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == MediaTypeDockerManifest
}

func isLayerType(mt string) bool {
	_, err := compression.FromMediaType(mt)
	return err == nil && mt != ""
}

// document is the union of the fields of an index and a manifest, to read
// a blob whose type is not known.
type document struct {
	MediaType string               `json:"mediaType,omitempty"`
	Manifests []ocispec.Descriptor `json:"manifests,omitempty"`
	Config    *ocispec.Descriptor  `json:"config,omitempty"`
	Layers    []ocispec.Descriptor `json:"layers,omitempty"`
}

// readJSONBlob reads blob dgst (at most MaxJSONSize bytes) into v. what
// names the document in errors ("manifest", "config", ...).
func (s *Service) readJSONBlob(ctx context.Context, dgst digest.Digest, what string, v any) error {
	ra, err := s.cs.ReaderAt(ctx, dgst)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, dgst, err)
	}
	defer ra.Close()
	if ra.Size() > MaxJSONSize {
		return fmt.Errorf("%s %s is %d bytes, more than the %d byte limit: %w", what, dgst, ra.Size(), MaxJSONSize, errdefs.ErrResourceExhausted)
	}
	b := make([]byte, ra.Size())
	if _, err := ra.ReadAt(b, 0); err != nil && err != io.EOF {
		return fmt.Errorf("%s %s: %w", what, dgst, err)
	}
	return decodeJSON(b, what, dgst.String(), v)
}

func decodeJSON(b []byte, what, name string, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s %s is not valid JSON: %v: %w", what, name, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// docKind classifies a descriptor: "index", "manifest", "layer", "config"
// or "" (unknown). An empty media type is resolved by reading the blob.
func (s *Service) docKind(ctx context.Context, d ocispec.Descriptor) (string, *document, error) {
	switch {
	case isIndexType(d.MediaType):
		return "index", nil, nil
	case isManifestType(d.MediaType):
		return "manifest", nil, nil
	case d.MediaType == "":
		var doc document
		if err := s.readJSONBlob(ctx, d.Digest, "document", &doc); err != nil {
			return "", nil, err
		}
		switch {
		case isIndexType(doc.MediaType) || (doc.MediaType == "" && doc.Manifests != nil):
			return "index", &doc, nil
		case isManifestType(doc.MediaType) || (doc.MediaType == "" && doc.Config != nil):
			return "manifest", &doc, nil
		}
	}
	return "", nil, nil
}

func checkDescriptor(d ocispec.Descriptor, where string) error {
	if d.Digest.Algorithm() != digest.SHA256 || d.Digest.Validate() != nil {
		return fmt.Errorf("%s: descriptor digest %q is not a valid sha256 digest: %w", where, d.Digest, errdefs.ErrInvalidArgument)
	}
	if d.Size < 0 {
		return fmt.Errorf("%s: descriptor %s has negative size %d: %w", where, d.Digest, d.Size, errdefs.ErrInvalidArgument)
	}
	return nil
}

// chainIDs returns the chain IDs of diffIDs (OCI image-spec: ChainID(L0) =
// DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))).
func chainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		out[i] = digest.FromString(out[i-1].String() + " " + d.String())
	}
	return out
}

// ChainIDs is chainIDs for callers that create containers from an image:
// the last chain ID is the key of the image's top snapshot.
func ChainIDs(diffIDs []digest.Digest) []digest.Digest { return chainIDs(diffIDs) }
