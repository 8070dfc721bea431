// Package java stands in for pulumi-java's codegen package, which the module
// proxy does not serve. The provider only puts this struct into the
// "language.java" section of its schema (SDK generation metadata).
package java

type PackageInfo struct {
	BuildFiles                      string            `json:"buildFiles,omitempty"`
	GradleNexusPublishPluginVersion string            `json:"gradleNexusPublishPluginVersion,omitempty"`
	Dependencies                    map[string]string `json:"dependencies,omitempty"`
}
