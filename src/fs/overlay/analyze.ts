export async function analyzeUpper(): Promise<void> {}
