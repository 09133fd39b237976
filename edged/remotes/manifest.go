package remotes

import (
	"encoding/json"
	"fmt"
	"mime"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/edged/edged/edged/errdefs"
)

// Manifest media types understood besides the OCI ones.
const (
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerSchema1      = "application/vnd.docker.distribution.manifest.v1+json"
	mediaTypeDockerSchema1JWS   = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// MaxManifestSize bounds manifests and indexes, which are held in memory.
const MaxManifestSize = 4 << 20

// maxIndexDepth bounds nested indexes.
const maxIndexDepth = 4

// acceptManifests is the Accept header of manifest requests.
const acceptManifests = ocispec.MediaTypeImageIndex + ", " + ocispec.MediaTypeImageManifest + ", " +
	MediaTypeDockerManifestList + ", " + MediaTypeDockerManifest

func isIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}

func isManifest(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == MediaTypeDockerManifest
}

func isSchema1(mt string) bool {
	return mt == mediaTypeDockerSchema1 || mt == mediaTypeDockerSchema1JWS
}

func errSchema1(what string) error {
	return fmt.Errorf("%s is a Docker schema 1 manifest, which is deprecated and not supported; push the image again with a current tool (schema 2 or OCI): %w",
		what, errdefs.ErrNotImplemented)
}

// headerMediaType returns the media type of a Content-Type header value,
// "" when absent or generic.
func headerMediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt == "application/json" || mt == "text/plain" || mt == "application/octet-stream" {
		return ""
	}
	return mt
}

// manifestShape is the union of the fields of indexes and manifests that
// decides what a document is.
type manifestShape struct {
	SchemaVersion int                  `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	FSLayers      json.RawMessage      `json:"fsLayers"` // schema 1
}

// detectMediaType decides the media type of a manifest document from the
// server's Content-Type (headerMT, may be "") and its content, refusing
// schema 1 and anything that is neither an index nor a manifest.
func detectMediaType(what, headerMT string, data []byte) (string, error) {
	if isSchema1(headerMT) {
		return "", errSchema1(what)
	}
	var m manifestShape
	if err := json.Unmarshal(data, &m); err != nil {
		return "", fmt.Errorf("%s: invalid manifest JSON: %v: %w", what, err, errdefs.ErrInvalidArgument)
	}
	if m.SchemaVersion == 1 || isSchema1(m.MediaType) || m.FSLayers != nil {
		return "", errSchema1(what)
	}
	mt := m.MediaType
	if mt == "" {
		mt = headerMT
	}
	if mt == "" {
		switch {
		case m.Manifests != nil:
			mt = ocispec.MediaTypeImageIndex
		case m.Config != nil:
			mt = ocispec.MediaTypeImageManifest
		}
	}
	if !isIndex(mt) && !isManifest(mt) {
		return "", fmt.Errorf("%s: unsupported manifest media type %q: %w", what, mt, errdefs.ErrNotImplemented)
	}
	if m.SchemaVersion != 2 {
		return "", fmt.Errorf("%s: unsupported schemaVersion %d: %w", what, m.SchemaVersion, errdefs.ErrInvalidArgument)
	}
	return mt, nil
}
