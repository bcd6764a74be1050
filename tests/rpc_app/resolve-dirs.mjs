// A module-resolution hook: @anycable/serverless-js 0.1.0 is published for bundlers
// (Next.js) and imports directories ('../rpc') from ES modules, which plain Node refuses
// (ERR_UNSUPPORTED_DIR_IMPORT). Resolve such an import to the directory's index.js, as a
// bundler does. The package's code itself runs unchanged.
export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    if (err && err.code === "ERR_UNSUPPORTED_DIR_IMPORT") {
      return nextResolve(`${specifier}/index.js`, context);
    }
    throw err;
  }
}
