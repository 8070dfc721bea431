// Package codegen stands in for pulumi-dotnet's codegen package, which the
// module proxy does not serve. The provider only puts this struct into the
// "language.csharp" section of its schema (SDK generation metadata).
package codegen

type CSharpPackageInfo struct {
	RespectSchemaVersion bool              `json:"respectSchemaVersion,omitempty"`
	PackageReferences    map[string]string `json:"packageReferences,omitempty"`
}
